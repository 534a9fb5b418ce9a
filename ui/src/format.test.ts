import { describe, expect, it } from 'vitest';
import { fillFraction, formatAgo, formatBytes, formatPercent, parseSize, rebuildFraction } from './format';

describe('formatBytes', () => {
  it('writes binary units the way the CLI does', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1024)).toBe('1 KiB');
    expect(formatBytes(1536 * 1024 * 1024)).toBe('1.5 GiB');
    expect(formatBytes(64 * 1024 * 1024)).toBe('64 MiB');
    expect(formatBytes(10.25 * 1024 ** 4)).toBe('10.3 TiB');
    expect(formatBytes(-1)).toBe('—');
  });
});

describe('parseSize', () => {
  it('reads what users type and rounds up to 4 KiB', () => {
    expect(parseSize('10G')).toBe(10 * 1024 ** 3);
    expect(parseSize('512MiB')).toBe(512 * 1024 ** 2);
    expect(parseSize('1.5 TiB')).toBe(1.5 * 1024 ** 4);
    expect(parseSize('4096')).toBe(4096);
    expect(parseSize('1')).toBe(4096);
    expect(parseSize('5000')).toBe(8192);
  });
  it('refuses what is not a size', () => {
    expect(parseSize('')).toBeNull();
    expect(parseSize('ten')).toBeNull();
    expect(parseSize('0')).toBeNull();
    expect(parseSize('-1G')).toBeNull();
    expect(parseSize('1X')).toBeNull();
  });
});

describe('formatAgo', () => {
  const now = Date.parse('2026-12-07T12:00:00Z');
  it('says how long ago', () => {
    expect(formatAgo('2026-12-07T11:59:48Z', now)).toBe('12 s ago');
    expect(formatAgo('2026-12-07T11:55:00Z', now)).toBe('5 min ago');
    expect(formatAgo('2026-12-07T09:00:00Z', now)).toBe('3 h ago');
    expect(formatAgo('2026-12-05T12:00:00Z', now)).toBe('2 d ago');
    expect(formatAgo(null, now)).toBe('—');
    expect(formatAgo('not a time', now)).toBe('not a time');
  });
});

describe('progress', () => {
  it('reads the manager\'s rebuild and fill progress', () => {
    expect(rebuildFraction('head 25/100 bytes')).toBe(0.25);
    expect(rebuildFraction('snap-1 0/0 bytes')).toBe(1);
    expect(rebuildFraction(null)).toBeNull();
    expect(rebuildFraction('starting')).toBeNull();
    expect(fillFraction('40% (1 of 2 bytes examined, 1 transferred)')).toBe(0.4);
    expect(fillFraction('copying')).toBeNull();
    expect(formatPercent(0.429)).toBe('42%');
  });
});
