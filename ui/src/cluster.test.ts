import { describe, expect, it } from 'vitest';
import type { Node, Replica, Volume } from './api/client';
import { capacity, countByHealth, filterVolumes, replicasByVolume, volumeHealth } from './cluster';

function volume(name: string, state: string, robustness = 'unknown', extra: object = {}): Volume {
  return {
    name,
    spec: { size: 4096, replicas: 2, attached_node: state === 'attached' ? 'n1' : null, ...extra },
    status: { state, robustness, message: '', salvages: 0 },
  } as unknown as Volume;
}

function replica(name: string, volume: string, node: string): Replica {
  return { name, spec: { volume, node }, status: { state: 'running' } } as unknown as Replica;
}

describe('volumeHealth', () => {
  it('is the data\'s health while attached, the state otherwise', () => {
    expect(volumeHealth(volume('a', 'attached', 'healthy'))).toBe('healthy');
    expect(volumeHealth(volume('a', 'attached', 'degraded'))).toBe('degraded');
    expect(volumeHealth(volume('a', 'attached', 'faulted'))).toBe('faulted');
    expect(volumeHealth(volume('a', 'attached', 'unknown'))).toBe('attaching');
    expect(volumeHealth(volume('a', 'detached', 'healthy'))).toBe('detached');
    expect(volumeHealth(volume('a', 'creating'))).toBe('creating');
  });
});

describe('filterVolumes', () => {
  const volumes = [
    volume('db-1', 'attached', 'healthy', { size: 8192, labels: { app: 'postgres' } }),
    volume('db-2', 'attached', 'degraded', { labels: { app: 'postgres', env: 'prod' } }),
    volume('web', 'detached', 'healthy', { size: 16384 }),
  ];
  const replicas = replicasByVolume([replica('r1', 'web', 'n2'), replica('r2', 'db-1', 'n1')]);
  const names = (list: Volume[]) => list.map((v) => v.name);
  const byName = { key: 'name', descending: false } as const;

  it('matches names, labels, health and nodes', () => {
    expect(names(filterVolumes(volumes, replicas, { text: 'db', health: '', node: '' }, byName))).toEqual(['db-1', 'db-2']);
    expect(names(filterVolumes(volumes, replicas, { text: 'env=prod', health: '', node: '' }, byName))).toEqual(['db-2']);
    expect(names(filterVolumes(volumes, replicas, { text: 'APP', health: '', node: '' }, byName))).toEqual(['db-1', 'db-2']);
    expect(names(filterVolumes(volumes, replicas, { text: 'db app=postgres', health: 'degraded', node: '' }, byName))).toEqual(['db-2']);
    expect(names(filterVolumes(volumes, replicas, { text: '', health: '', node: 'n2' }, byName))).toEqual(['web']);
    expect(names(filterVolumes(volumes, replicas, { text: 'nothing', health: '', node: '' }, byName))).toEqual([]);
  });

  it('sorts by the chosen column, then by name', () => {
    const bySize = { key: 'size', descending: true } as const;
    expect(names(filterVolumes(volumes, replicas, { text: '', health: '', node: '' }, bySize))).toEqual(['web', 'db-1', 'db-2']);
    const byHealth = { key: 'health', descending: false } as const;
    expect(names(filterVolumes(volumes, replicas, { text: '', health: '', node: '' }, byHealth))).toEqual(['db-1', 'db-2', 'web']);
  });

  it('filters 1,000 volumes', () => {
    const many = Array.from({ length: 1000 }, (_, i) => volume(`vol-${i}`, i % 3 ? 'attached' : 'detached', 'healthy', { labels: { n: String(i) } }));
    const kept = filterVolumes(many, new Map(), { text: 'vol-99', health: '', node: '' }, byName);
    expect(kept.map((v) => v.name)).toEqual(['vol-99', ...Array.from({ length: 10 }, (_, i) => `vol-99${i}`)]);
  });
});

describe('countByHealth and capacity', () => {
  it('counts volumes and sums disks', () => {
    const counts = countByHealth([volume('a', 'attached', 'healthy'), volume('b', 'detached')]);
    expect(counts.healthy).toBe(1);
    expect(counts.detached).toBe(1);
    const node = (ready: boolean) =>
      ({
        name: 'n',
        spec: { allow_scheduling: true, disks: [{ name: 'd', reserved: 100, allow_scheduling: true }] },
        status: { ready, disks: [{ name: 'd', capacity: 1000, available: 600, scheduled: 300, replicas: 1 }] },
      }) as unknown as Node;
    expect(capacity([node(true), node(false)])).toEqual({
      total: 2000,
      used: 800,
      reserved: 200,
      scheduled: 600,
      schedulable: 500,
    });
  });
});
