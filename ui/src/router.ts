// Pages by URL hash (`#/volumes/db-1`): the server serves one page at `/`, and a reload
// or a shared link opens the same view.

import { useEffect, useState } from 'preact/hooks';

export interface Route {
  page: string;
  /** The part after the page: a volume's name on its detail page. */
  param: string | null;
}

export function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean);
  let param: string | null = null;
  if (parts.length > 1) {
    try {
      param = decodeURIComponent(parts.slice(1).join('/'));
    } catch {
      param = parts.slice(1).join('/');
    }
  }
  return { page: parts[0] ?? 'dashboard', param };
}

export function href(page: string, param?: string): string {
  return param === undefined ? `#/${page}` : `#/${page}/${encodeURIComponent(param)}`;
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const changed = () => setRoute(parseRoute(location.hash));
    addEventListener('hashchange', changed);
    return () => removeEventListener('hashchange', changed);
  }, []);
  return route;
}
