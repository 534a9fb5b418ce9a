// The volume page's I/O charts: samples from `/v1/volumes/{name}/io` (one a second),
// the last minute kept, drawn as SVG polylines.

import type { components } from './api/types';

export type IoSample = components['schemas']['IoSample'];

/** Samples kept: a minute at one a second. */
export const HISTORY = 60;

/** The history with `sample` added, the oldest dropped past [`HISTORY`]. */
export function addSample(history: IoSample[], sample: IoSample): IoSample[] {
  const next = [...history, sample];
  return next.length > HISTORY ? next.slice(next.length - HISTORY) : next;
}

/** A scale's top: a round number at or above `max` (1, 2, 5 × a power of ten). */
export function niceCeiling(max: number): number {
  if (!(max > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= max) return step * power;
  }
  return 10 * power;
}

/**
 * SVG polyline points for `values` in a `width` × `height` box, newest at the right
 * edge, `top` at the top; slots of a full history, so the line moves left as it grows.
 */
export function linePoints(values: number[], width: number, height: number, top: number): string {
  const step = width / (HISTORY - 1);
  const offset = HISTORY - values.length;
  return values
    .map((value, i) => {
      const x = (offset + i) * step;
      const y = height - (Math.min(Math.max(value, 0), top) / top) * height;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(' ');
}
