import { describe, expect, it } from 'vitest';
import { addSample, HISTORY, type IoSample, linePoints, niceCeiling } from './charts';

const rates = { iops: 0, bytes_per_second: 0, latency_avg_seconds: 0, latency_p99_seconds: 0, errors_total: 0 };
const sample = (i: number): IoSample => ({ time: String(i), read: rates, write: { ...rates, iops: i } });

describe('I/O history', () => {
  it('keeps the last minute', () => {
    let history: IoSample[] = [];
    for (let i = 0; i < HISTORY + 5; i += 1) history = addSample(history, sample(i));
    expect(history).toHaveLength(HISTORY);
    expect(history[0].time).toBe('5');
    expect(history[HISTORY - 1].write.iops).toBe(HISTORY + 4);
  });
});

describe('chart geometry', () => {
  it('rounds the scale up to 1, 2 or 5 times a power of ten', () => {
    expect(niceCeiling(0)).toBe(1);
    expect(niceCeiling(0.003)).toBe(0.005);
    expect(niceCeiling(1)).toBe(1);
    expect(niceCeiling(1.2)).toBe(2);
    expect(niceCeiling(340)).toBe(500);
    expect(niceCeiling(7000)).toBe(10000);
  });
  it('puts the newest value at the right edge and clamps to the box', () => {
    expect(linePoints([0, 50, 200], 590, 100, 100)).toBe('570.0,100.0 580.0,50.0 590.0,0.0');
    expect(linePoints([], 590, 100, 100)).toBe('');
  });
});
