import { describe, expect, it } from 'vitest';
import { ClusterState, MAX_EVENTS, parseStreamEvent } from './store';

const put = (kind: string, name: string, object: unknown = { name }) =>
  ({ type: 'put', message: { kind, name, object } }) as const;
const del = (kind: string, name: string) => ({ type: 'delete', message: { kind, name } }) as const;

describe('ClusterState', () => {
  it('shows nothing until the first full list is synced', () => {
    const state = new ClusterState();
    expect(state.apply(put('volume', 'a'))).toBe(false);
    expect(state.synced).toBe(false);
    expect(state.list('volume')).toEqual([]);
    expect(state.apply({ type: 'synced' })).toBe(true);
    expect(state.synced).toBe(true);
    expect(state.list('volume')).toEqual([{ name: 'a' }]);
  });

  it('applies each change after the sync, one object at a time', () => {
    const state = new ClusterState();
    state.apply(put('volume', 'a', { state: 'creating' }));
    state.apply({ type: 'synced' });
    const before = state.version;
    expect(state.apply(put('volume', 'a', { state: 'attached' }))).toBe(true);
    expect(state.get('volume', 'a')).toEqual({ state: 'attached' });
    expect(state.apply(put('node', 'n1'))).toBe(true);
    expect(state.apply(del('volume', 'a'))).toBe(true);
    expect(state.get('volume', 'a')).toBeUndefined();
    expect(state.version).toBe(before + 3);
  });

  it('ignores kinds it does not know', () => {
    const state = new ClusterState();
    state.apply({ type: 'synced' });
    expect(state.apply(put('gadget', 'x'))).toBe(false);
  });

  it('swaps in a full list after a reset, dropping what the new list lacks', () => {
    const state = new ClusterState();
    state.apply(put('volume', 'a'));
    state.apply(put('volume', 'b'));
    state.apply({ type: 'synced' });
    state.apply({ type: 'reset' });
    state.apply(put('volume', 'b', { name: 'b', size: 2 }));
    // Until the new list is synced, the page keeps the old one.
    expect(state.list('volume')).toHaveLength(2);
    state.apply({ type: 'synced' });
    expect(state.list('volume')).toEqual([{ name: 'b', size: 2 }]);
  });

  it('keeps only the newest events', () => {
    const state = new ClusterState();
    state.apply({ type: 'synced' });
    for (let i = 0; i < MAX_EVENTS + 10; i += 1) {
      const time = new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString();
      state.apply(put('event', `e${i}`, { time }));
    }
    expect(state.objects.event.size).toBe(MAX_EVENTS);
    expect(state.get('event', 'e0')).toBeUndefined();
    expect(state.get('event', `e${MAX_EVENTS + 9}`)).toBeDefined();
  });
});

describe('parseStreamEvent', () => {
  it('reads the stream\'s four event types', () => {
    expect(parseStreamEvent('synced', '')).toEqual({ type: 'synced' });
    expect(parseStreamEvent('reset', '')).toEqual({ type: 'reset' });
    expect(parseStreamEvent('put', '{"kind":"volume","name":"a","object":{}}')).toEqual({
      type: 'put',
      message: { kind: 'volume', name: 'a', object: {} },
    });
    expect(parseStreamEvent('delete', '{"kind":"volume","name":"a"}')?.type).toBe('delete');
  });
  it('drops what it cannot read', () => {
    expect(parseStreamEvent('put', 'not json')).toBeNull();
    expect(parseStreamEvent('put', '{"name":"a"}')).toBeNull();
    expect(parseStreamEvent('message', '{}')).toBeNull();
  });
});
