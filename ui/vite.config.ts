import { defineConfig } from 'vitest/config';

// Preact through esbuild's automatic JSX runtime (no plugin needed). The build must run
// under the manager's Content-Security-Policy (`default-src 'self'`): no inline script
// (the module-preload polyfill is inline), no data: URLs for assets.
export default defineConfig({
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    target: 'es2022',
  },
  test: { include: ['src/**/*.test.ts'], environment: 'node' },
});
