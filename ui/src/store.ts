// The cluster as the watch stream shows it: every object by kind and name, kept up to
// date one message at a time. The stream starts with every object (`put` each), then
// `synced`; after that one `put` per changed object and one `delete` per removed one.
// A `reset` (the watcher fell behind) or a reconnect sends the full list again: it is
// gathered aside and swapped in at `synced`, so the page never shows half a list.

export const KINDS = [
  'settings',
  'node',
  'volume',
  'replica',
  'engine',
  'job',
  'backup-target',
  'backup',
  'event',
] as const;
export type Kind = (typeof KINDS)[number];

/** Events kept in memory: the newest this many (the server keeps its own bounded log). */
export const MAX_EVENTS = 500;

export interface WatchMessage {
  kind: string;
  name: string;
  object?: unknown;
}

export type StreamEvent =
  | { type: 'put'; message: WatchMessage }
  | { type: 'delete'; message: WatchMessage }
  | { type: 'synced' }
  | { type: 'reset' };

export type Objects = Record<Kind, Map<string, unknown>>;

function emptyObjects(): Objects {
  return Object.fromEntries(KINDS.map((kind) => [kind, new Map()])) as Objects;
}

function isKind(kind: string): kind is Kind {
  return (KINDS as readonly string[]).includes(kind);
}

export class ClusterState {
  /** What the page shows. */
  objects: Objects = emptyObjects();
  /** Whether `objects` holds a full list (the first `synced` arrived). */
  synced = false;
  /** Bumped on every change the page can see. */
  version = 0;
  /** A full list being gathered (after a reconnect or a `reset`), shown at `synced`. */
  private pending: Objects | null = emptyObjects();

  /** A new connection: the server sends the full list again. */
  restart(): void {
    this.pending = emptyObjects();
  }

  /** Applies one stream event; returns whether what the page shows changed. */
  apply(event: StreamEvent): boolean {
    switch (event.type) {
      case 'reset':
        this.restart();
        return false;
      case 'synced':
        if (this.pending === null) return false;
        this.objects = this.pending;
        this.pending = null;
        this.synced = true;
        this.version += 1;
        return true;
      case 'put':
      case 'delete': {
        const { kind, name, object } = event.message;
        if (!isKind(kind)) return false;
        const target = this.pending ?? this.objects;
        if (event.type === 'put') {
          target[kind].set(name, object);
          if (kind === 'event') trimEvents(target.event);
        } else {
          target[kind].delete(name);
        }
        if (this.pending !== null) return false;
        this.version += 1;
        return true;
      }
    }
  }

  list<T>(kind: Kind): T[] {
    return [...this.objects[kind].values()] as T[];
  }

  get<T>(kind: Kind, name: string): T | undefined {
    return this.objects[kind].get(name) as T | undefined;
  }
}

/** Keeps the newest [`MAX_EVENTS`] events (by their `time`). */
function trimEvents(events: Map<string, unknown>): void {
  if (events.size <= MAX_EVENTS) return;
  const oldest = [...events.entries()]
    .sort(([, a], [, b]) => eventTime(a).localeCompare(eventTime(b)))
    .slice(0, events.size - MAX_EVENTS);
  for (const [name] of oldest) events.delete(name);
}

function eventTime(event: unknown): string {
  const time = (event as { time?: unknown } | null)?.time;
  return typeof time === 'string' ? time : '';
}

/** Parses one SSE message of `/v1/watch` (its event name and data). */
export function parseStreamEvent(type: string, data: string): StreamEvent | null {
  switch (type) {
    case 'synced':
    case 'reset':
      return { type };
    case 'put':
    case 'delete': {
      try {
        const message = JSON.parse(data) as WatchMessage;
        if (typeof message?.kind !== 'string' || typeof message?.name !== 'string') return null;
        return { type, message };
      } catch {
        return null;
      }
    }
    default:
      return null;
  }
}
