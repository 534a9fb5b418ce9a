// The page's one connection to the manager's watch stream, and the hook that re-renders a
// component when what it shows changed (at most once per animation frame: a burst of
// messages, such as the first full list, costs one render).

import { useEffect, useState } from 'preact/hooks';
import { ClusterState, parseStreamEvent } from './store';

export const cluster = new ClusterState();

const listeners = new Set<() => void>();
let frame: number | null = null;
let source: EventSource | null = null;

/** Whether the stream is connected (shown in the header). */
export let connected = false;

function notify(): void {
  if (frame !== null) return;
  frame = requestAnimationFrame(() => {
    frame = null;
    for (const listener of listeners) listener();
  });
}

/** Opens the watch stream (after login); `onLost` runs when the session has ended. */
export function connect(onLost: () => void): void {
  disconnect();
  const stream = new EventSource('/v1/watch');
  source = stream;
  stream.onopen = () => {
    connected = true;
    cluster.restart();
    notify();
  };
  stream.onerror = () => {
    connected = false;
    notify();
    // The browser reconnects by itself; a 401 (session over) it would retry forever.
    fetch('/v1/session', { credentials: 'same-origin' })
      .then((response) => {
        if (response.status === 401 && source === stream) {
          disconnect();
          onLost();
        }
      })
      .catch(() => {});
  };
  for (const type of ['put', 'delete', 'synced', 'reset']) {
    stream.addEventListener(type, (event) => {
      const parsed = parseStreamEvent(type, (event as MessageEvent<string>).data);
      if (parsed && cluster.apply(parsed)) notify();
    });
  }
}

export function disconnect(): void {
  source?.close();
  source = null;
  connected = false;
}

/** The cluster state; the calling component re-renders when it changes. */
export function useCluster(): ClusterState {
  const [, setVersion] = useState(cluster.version);
  useEffect(() => {
    const listener = () => setVersion(cluster.version);
    listeners.add(listener);
    // Preact runs effects after the paint: a change may have come in since the render.
    listener();
    return () => {
      listeners.delete(listener);
    };
  }, []);
  return cluster;
}
