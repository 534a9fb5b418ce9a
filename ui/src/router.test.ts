import { describe, expect, it } from 'vitest';
import { href, parseRoute } from './router';

describe('routes', () => {
  it('read the page and its parameter from the hash', () => {
    expect(parseRoute('')).toEqual({ page: 'dashboard', param: null });
    expect(parseRoute('#/volumes')).toEqual({ page: 'volumes', param: null });
    expect(parseRoute('#/volumes/db%2F1')).toEqual({ page: 'volumes', param: 'db/1' });
    expect(parseRoute('#/volumes/%E0%A4%A')).toEqual({ page: 'volumes', param: '%E0%A4%A' });
  });
  it('round-trip through href', () => {
    expect(parseRoute(href('volumes', 'a b'))).toEqual({ page: 'volumes', param: 'a b' });
  });
});
