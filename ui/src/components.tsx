// The pieces every page uses: dialogs (native <dialog>, so focus and Escape work), the
// message area, capacity bars, state badges and the virtualised list.

import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError } from './api/client';
import { formatBytes, formatPercent } from './format';

// --- Messages -----------------------------------------------------------------------

export interface Notice {
  id: number;
  text: string;
  error: boolean;
}

let nextNotice = 1;
let notices: Notice[] = [];
const noticeListeners = new Set<(list: Notice[]) => void>();

export function notify(text: string, error = false): void {
  const notice = { id: nextNotice++, text, error };
  notices = [...notices.slice(-4), notice];
  noticeListeners.forEach((listener) => listener(notices));
  setTimeout(
    () => {
      notices = notices.filter((n) => n.id !== notice.id);
      noticeListeners.forEach((listener) => listener(notices));
    },
    error ? 12000 : 5000,
  );
}

/** Runs an API call; says what happened (the server's message on failure). */
export async function perform(what: string, call: () => Promise<unknown>): Promise<boolean> {
  try {
    await call();
    notify(`${what}: done`);
    return true;
  } catch (e) {
    notify(`${what}: ${e instanceof ApiError ? e.message : String(e)}`, true);
    return false;
  }
}

export function Notices() {
  const [list, setList] = useState(notices);
  useEffect(() => {
    noticeListeners.add(setList);
    return () => {
      noticeListeners.delete(setList);
    };
  }, []);
  return (
    <div class="notices" role="status" aria-live="polite">
      {list.map((notice) => (
        <p key={notice.id} class={notice.error ? 'notice error' : 'notice'}>
          {notice.text}
        </p>
      ))}
    </div>
  );
}

// --- Dialogs ------------------------------------------------------------------------

export function Dialog(props: {
  title: string;
  onClose: () => void;
  children: ComponentChildren;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const dialog = ref.current;
    if (dialog && !dialog.open) dialog.showModal();
  }, []);
  return (
    <dialog ref={ref} aria-labelledby="dialog-title" onClose={props.onClose} onCancel={props.onClose}>
      <h2 id="dialog-title">{props.title}</h2>
      {props.children}
    </dialog>
  );
}

/**
 * A confirmation for what cannot be undone: says what will happen and, for the worst,
 * asks for the object's name to be typed.
 */
export function Confirm(props: {
  title: string;
  children: ComponentChildren;
  action: string;
  typeToConfirm?: string;
  onConfirm: () => Promise<unknown> | void;
  onClose: () => void;
}) {
  const [typed, setTyped] = useState('');
  const [busy, setBusy] = useState(false);
  const ready = props.typeToConfirm === undefined || typed === props.typeToConfirm;
  return (
    <Dialog title={props.title} onClose={props.onClose}>
      <form
        method="dialog"
        onSubmit={async (e) => {
          e.preventDefault();
          if (!ready) return;
          setBusy(true);
          await props.onConfirm();
          setBusy(false);
          props.onClose();
        }}
      >
        <div class="confirm-text">{props.children}</div>
        {props.typeToConfirm !== undefined && (
          <label>
            <span>
              Type <strong>{props.typeToConfirm}</strong> to confirm
            </span>
            <input value={typed} onInput={(e) => setTyped(e.currentTarget.value)} autoFocus />
          </label>
        )}
        <div class="buttons">
          <button type="button" onClick={props.onClose}>
            Cancel
          </button>
          <button type="submit" class="danger" disabled={!ready || busy}>
            {props.action}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

// --- Figures ------------------------------------------------------------------------

/** A bar of `used` out of `total` bytes, with the figures written out. */
export function CapacityBar(props: { label: string; used: number; total: number }) {
  const fraction = props.total > 0 ? Math.min(1, props.used / props.total) : 0;
  return (
    <div class="capacity">
      <div class="capacity-label">
        <span>{props.label}</span>
        <span>
          {formatBytes(props.used)} of {formatBytes(props.total)} ({formatPercent(fraction)})
        </span>
      </div>
      <progress max={1} value={fraction} aria-label={`${props.label}: ${formatPercent(fraction)}`} />
    </div>
  );
}

export function Badge(props: { state: string }) {
  return <span class={`badge badge-${props.state}`}>{props.state}</span>;
}

/** A section heading with its actions on the right. */
export function Header(props: { title: string; children?: ComponentChildren }) {
  return (
    <div class="page-header">
      <h1>{props.title}</h1>
      <div class="actions">{props.children}</div>
    </div>
  );
}

// --- The virtualised list -----------------------------------------------------------

/**
 * Rows of a fixed height, of which only those in view (and a few more) are in the page:
 * 1,000 volumes cost as much to render as 30.
 */
export function VirtualRows<T>(props: {
  items: T[];
  rowHeight: number;
  height: number;
  label: string;
  header: ComponentChildren;
  row: (item: T, index: number) => ComponentChildren;
}) {
  const [scrollTop, setScrollTop] = useState(0);
  const overscan = 8;
  const first = Math.max(0, Math.floor(scrollTop / props.rowHeight) - overscan);
  const last = Math.min(
    props.items.length,
    Math.ceil((scrollTop + props.height) / props.rowHeight) + overscan,
  );
  return (
    <div
      class="virtual"
      role="table"
      aria-label={props.label}
      aria-rowcount={props.items.length + 1}
    >
      <div role="rowgroup" class="virtual-head">
        {props.header}
      </div>
      <div
        role="rowgroup"
        class="virtual-body"
        tabIndex={0}
        style={{ height: `${props.height}px` }}
        onScroll={(e) => setScrollTop(e.currentTarget.scrollTop)}
      >
        <div style={{ height: `${props.items.length * props.rowHeight}px`, position: 'relative' }}>
          {props.items.slice(first, last).map((item, offset) => (
            <div
              key={first + offset}
              class="virtual-row"
              role="row"
              aria-rowindex={first + offset + 2}
              style={{ top: `${(first + offset) * props.rowHeight}px`, height: `${props.rowHeight}px` }}
            >
              {props.row(item, first + offset)}
            </div>
          ))}
        </div>
      </div>
    </div>
  );
}

/** A table's column headings; an empty name is an actions column (named for screen readers). */
export function Columns(props: { names: string[] }) {
  return (
    <thead>
      <tr>
        {props.names.map((name) => (
          <th scope="col">{name === '' ? <span class="sr-only">Actions</span> : name}</th>
        ))}
      </tr>
    </thead>
  );
}
