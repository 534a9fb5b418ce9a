import { useEffect, useState } from 'preact/hooks';
import type { Backup, BackupTarget, ClusterEvent, Engine, Node, Replica, Snapshot, Volume } from '../api/client';
import { api, ApiError } from '../api/client';
import { volumeHealth } from '../cluster';
import { Badge, Confirm, Dialog, Header, notify, perform, Columns } from '../components';
import { fillFraction, formatAgo, formatBytes, formatPercent, parseSize, rebuildFraction } from '../format';
import { useCluster } from '../live';
import { href } from '../router';
import { EventRows, newestEvents } from './events';
import { IoCharts } from './io-charts';
import { CreateVolumeDialog } from './volumes';

type Action =
  | { kind: 'attach' | 'detach' | 'expand' | 'snapshot' | 'backup' | 'clone' | 'delete' | 'replicas' | 'activate' }
  | { kind: 'revert' | 'delete-snapshot' | 'clone-snapshot'; snapshot: string };

export function VolumePage(props: { name: string }) {
  const state = useCluster();
  const volume = state.get<Volume>('volume', props.name);
  const [action, setAction] = useState<Action | null>(null);
  const [snapshots, setSnapshots] = useState<Snapshot[] | null>(null);
  const [snapshotError, setSnapshotError] = useState<string | null>(null);
  const events = newestEvents(
    state.list<ClusterEvent>('event').filter((e) => e.volume === props.name),
    20,
  );
  // Snapshots live in the replicas, not in the watch stream: read them when the page
  // opens, after an action, and when an event about the volume arrives.
  const newestEvent = events[0]?.name ?? '';
  const attached = volume?.status.state;
  const refreshSnapshots = () => {
    api
      .snapshots(props.name)
      .then((list) => {
        setSnapshots(list);
        setSnapshotError(null);
      })
      .catch((e) => setSnapshotError(e instanceof ApiError ? e.message : String(e)));
  };
  useEffect(refreshSnapshots, [props.name, newestEvent, attached]);
  if (!volume) {
    return (
      <>
        <Header title={props.name} />
        <p>
          There is no volume {JSON.stringify(props.name)} (any more). <a href={href('volumes')}>All volumes</a>
        </p>
      </>
    );
  }
  const replicas = state
    .list<Replica>('replica')
    .filter((r) => r.spec.volume === volume.name)
    .sort((a, b) => a.name.localeCompare(b.name));
  const engine = state.list<Engine>('engine').find((e) => e.spec.volume === volume.name);
  const backups = state
    .list<Backup>('backup')
    .filter((b) => b.spec.volume === volume.name)
    .sort((a, b) => b.name.localeCompare(a.name));
  const isAttached = volume.spec.attached_node != null;
  const done = () => {
    setAction(null);
    refreshSnapshots();
  };
  return (
    <>
      <nav aria-label="Breadcrumb" class="crumbs">
        <a href={href('volumes')}>Volumes</a> / <span>{volume.name}</span>
      </nav>
      <Header title={volume.name}>
        <Badge state={volumeHealth(volume)} />
        {volume.spec.standby ? (
          <>
            <button type="button" onClick={() => perform(`sync ${volume.name}`, () => api.syncStandby(volume.name))}>
              Sync now
            </button>
            <button type="button" onClick={() => setAction({ kind: 'activate' })}>Activate</button>
            <button type="button" onClick={() => setAction({ kind: 'replicas' })}>Replica count</button>
            <button type="button" class="danger" onClick={() => setAction({ kind: 'delete' })}>Delete</button>
          </>
        ) : (
          <>
        {isAttached ? (
          <button type="button" onClick={() => setAction({ kind: 'detach' })}>Detach</button>
        ) : (
          <button type="button" onClick={() => setAction({ kind: 'attach' })}>Attach</button>
        )}
        <button type="button" onClick={() => setAction({ kind: 'expand' })}>Expand</button>
        <button type="button" onClick={() => setAction({ kind: 'snapshot' })}>Take snapshot</button>
        <button type="button" onClick={() => setAction({ kind: 'backup' })}>Back up</button>
        <button type="button" onClick={() => setAction({ kind: 'clone' })}>Clone</button>
        <button type="button" onClick={() => setAction({ kind: 'replicas' })}>Replica count</button>
        <button type="button" class="danger" onClick={() => setAction({ kind: 'delete' })}>Delete</button>
          </>
        )}
      </Header>
      <dl class="facts">
        <dt>Size</dt>
        <dd>{formatBytes(volume.spec.size)}</dd>
        <dt>State</dt>
        <dd>
          {volume.status.state}, data {volume.status.robustness}
        </dd>
        <dt>Attached to</dt>
        <dd>{volume.spec.attached_node ?? '—'}</dd>
        <dt>Endpoint</dt>
        <dd>{volume.status.endpoint ? <code>{volume.status.endpoint}</code> : '—'}</dd>
        <dt>Replicas wanted</dt>
        <dd>{volume.spec.replicas}</dd>
        <dt>Data locality</dt>
        <dd>
          {volume.spec.data_locality}{' '}
          <button
            type="button"
            class="link"
            onClick={() =>
              perform(`data locality of ${volume.name}`, () =>
                api.setDataLocality(
                  volume.name,
                  volume.spec.data_locality === 'best-effort' ? 'disabled' : 'best-effort',
                ),
              )
            }
          >
            switch to {volume.spec.data_locality === 'best-effort' ? 'disabled' : 'best-effort'}
          </button>
        </dd>
        <dt>Labels</dt>
        <dd>
          {Object.entries((volume.spec.labels ?? {}) as Record<string, string>)
            .map(([k, v]) => `${k}=${v}`)
            .join(', ') || '—'}
        </dd>
        {volume.status.message && (
          <>
            <dt>Message</dt>
            <dd>{volume.status.message}</dd>
          </>
        )}
      </dl>

      {volume.spec.standby && <StandbyFacts volume={volume} />}

      <section aria-labelledby="replicas-title">
        <h2 id="replicas-title">Replicas</h2>
        <ReplicaTable replicas={replicas} engine={engine} volume={volume.name} removable={!volume.spec.standby} />
      </section>

      <section aria-labelledby="io-title">
        <h2 id="io-title">I/O</h2>
        <IoCharts volume={volume.name} attached={volume.status.state === 'attached'} />
      </section>

      <section aria-labelledby="snapshots-title">
        <div class="section-header">
          <h2 id="snapshots-title">Snapshots</h2>
          {!volume.spec.standby && (
            <button
              type="button"
              onClick={() => perform(`purge ${volume.name}`, () => api.purgeSnapshots(volume.name)).then(refreshSnapshots)}
            >
              Purge removed snapshots
            </button>
          )}
        </div>
        {volume.spec.standby && <p class="muted">A standby volume has no snapshots until it is activated.</p>}
        {snapshotError && !volume.spec.standby && <p class="muted">Snapshots cannot be read now: {snapshotError}</p>}
        {snapshots && !volume.spec.standby && (
          <SnapshotTree
            snapshots={snapshots}
            onAction={(kind, snapshot) => setAction({ kind, snapshot })}
          />
        )}
      </section>

      <section aria-labelledby="backups-title">
        <h2 id="backups-title">Backups</h2>
        {backups.length === 0 ? (
          <p>No backups of this volume.</p>
        ) : (
          <table class="grid">
            <Columns names={['Backup', 'Target', 'State', 'Snapshot', 'Uploaded', 'Completed']} />
            <tbody>
              {backups.map((b) => (
                <tr key={b.name}>
                  <td>{b.name}</td>
                  <td>{b.spec.target}</td>
                  <td>
                    <Badge state={b.status.state} /> {b.status.progress}
                  </td>
                  <td>{b.status.snapshot ?? b.spec.snapshot ?? '—'}</td>
                  <td>{formatBytes(b.status.uploaded_bytes)}</td>
                  <td>{formatAgo(b.status.completed)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>

      <section aria-labelledby="volume-events-title">
        <h2 id="volume-events-title">Events</h2>
        {events.length === 0 ? <p>No events for this volume.</p> : <EventRows events={events} />}
      </section>

      {action && <VolumeActionDialog volume={volume} action={action} onClose={done} />}
    </>
  );
}

/** `removable`: replicas may be removed one by one (not a standby's: they never run,
 * so the manager refuses to remove one; change the replica count instead). */
function ReplicaTable(props: { replicas: Replica[]; engine: Engine | undefined; volume: string; removable: boolean }) {
  return (
    <table class="grid">
      <Columns names={['Replica', 'Node', 'Disk', 'State', 'Mode', 'Progress', 'Data path', '']} />
      <tbody>
        {props.replicas.map((replica) => {
          const rebuild = rebuildFraction(replica.status.rebuild);
          const fill = fillFraction(replica.status.fill_progress);
          const progress = rebuild ?? fill;
          const what = rebuild !== null ? 'rebuilt' : 'filled';
          return (
            <tr key={replica.name} data-replica={replica.name}>
              <td>
                {replica.name}
                {replica.spec.retire && <span class="muted"> (retiring)</span>}
              </td>
              <td>{replica.spec.node}</td>
              <td>{replica.spec.disk}</td>
              <td>
                <Badge state={replica.status.state} />
              </td>
              <td>{replica.status.mode ?? '—'}</td>
              <td>
                {progress !== null ? (
                  <span class="progress-cell">
                    <progress max={1} value={progress} aria-label={`${replica.name} ${what} ${formatPercent(progress)}`} />
                    <span>{formatPercent(progress)}</span>
                  </span>
                ) : (
                  (replica.status.message || '—')
                )}
              </td>
              <td>{replica.status.data_path ? <code>{replica.status.data_path}</code> : '—'}</td>
              <td>
                {props.removable && (
                  <button
                    type="button"
                    class="link"
                    onClick={() =>
                      perform(`remove ${replica.name}`, () => api.removeReplica(props.volume, replica.name))
                    }
                  >
                    Remove
                  </button>
                )}
              </td>
            </tr>
          );
        })}
      </tbody>
      {props.engine && (
        <caption class="muted">
          Engine {props.engine.name} on {props.engine.status.node ?? '—'}: {props.engine.status.state}
          {props.engine.status.message ? ` (${props.engine.status.message})` : ''}
        </caption>
      )}
    </table>
  );
}

/** The snapshot chain as a tree: each snapshot under the one it was taken after. */
export function snapshotTree(snapshots: Snapshot[]): { snapshot: Snapshot; depth: number }[] {
  const byName = new Map(snapshots.map((s) => [s.name, s]));
  const roots = snapshots.filter((s) => !s.parent || !byName.has(s.parent));
  const rows: { snapshot: Snapshot; depth: number }[] = [];
  const seen = new Set<string>();
  const walk = (snapshot: Snapshot, depth: number) => {
    if (seen.has(snapshot.name)) return;
    seen.add(snapshot.name);
    rows.push({ snapshot, depth });
    const children = snapshot.children
      .map((name) => byName.get(name))
      .filter((s): s is Snapshot => s !== undefined)
      .sort((a, b) => a.created.localeCompare(b.created));
    for (const child of children) walk(child, depth + 1);
  };
  roots.sort((a, b) => a.created.localeCompare(b.created)).forEach((root) => walk(root, 0));
  return rows;
}

function SnapshotTree(props: {
  snapshots: Snapshot[];
  onAction: (kind: 'revert' | 'delete-snapshot' | 'clone-snapshot', snapshot: string) => void;
}) {
  if (props.snapshots.length === 0) return <p>No snapshots.</p>;
  return (
    <ul class="tree" aria-label="Snapshot tree">
      {snapshotTree(props.snapshots).map(({ snapshot, depth }) => (
        <li key={snapshot.name} style={{ paddingLeft: `${depth * 1.5}rem` }} data-snapshot={snapshot.name}>
          <span class="tree-name">{snapshot.name}</span>
          {!snapshot.user_created && <span class="tag">system</span>}
          {snapshot.removed && <span class="tag">removed</span>}
          <span class="muted">
            {formatBytes(snapshot.size)}, {formatAgo(snapshot.created)}
          </span>
          {!snapshot.removed && (
            <span class="tree-actions">
              <button type="button" class="link" onClick={() => props.onAction('revert', snapshot.name)}>
                Revert
              </button>
              <button type="button" class="link" onClick={() => props.onAction('clone-snapshot', snapshot.name)}>
                Clone
              </button>
              <button type="button" class="link" onClick={() => props.onAction('delete-snapshot', snapshot.name)}>
                Delete
              </button>
            </span>
          )}
        </li>
      ))}
    </ul>
  );
}

function VolumeActionDialog(props: { volume: Volume; action: Action; onClose: () => void }) {
  const { volume, action, onClose } = props;
  const state = useCluster();
  const [value, setValue] = useState(action.kind === 'replicas' ? String(volume.spec.replicas) : '');
  const run = async (what: string, call: () => Promise<unknown>) => {
    if (await perform(what, call)) onClose();
  };
  switch (action.kind) {
    case 'attach': {
      const nodes = state.list<Node>('node').filter((n) => n.status.ready).map((n) => n.name);
      return (
        <Dialog title={`Attach ${volume.name}`} onClose={onClose}>
          <form onSubmit={(e) => { e.preventDefault(); run(`attach ${volume.name}`, () => api.attach(volume.name, value || undefined)); }}>
            <label>
              Node <span class="muted">(its engine runs there and serves NBD)</span>
              <select value={value} onChange={(e) => setValue(e.currentTarget.value)}>
                <option value="">this manager's node</option>
                {nodes.map((n) => <option value={n}>{n}</option>)}
              </select>
            </label>
            <Buttons onClose={onClose} action="Attach" />
          </form>
        </Dialog>
      );
    }
    case 'detach':
      return (
        <Confirm title={`Detach ${volume.name}`} action="Detach" onClose={onClose} onConfirm={() => run(`detach ${volume.name}`, () => api.detach(volume.name))}>
          <p>Its engine on {volume.spec.attached_node} stops: a client still using it gets I/O errors.</p>
        </Confirm>
      );
    case 'expand':
      return (
        <Dialog title={`Expand ${volume.name}`} onClose={onClose}>
          <form
            onSubmit={(e) => {
              e.preventDefault();
              const size = parseSize(value);
              if (size === null) return notify(`size ${JSON.stringify(value)}: write it as 10 GiB, 512M or bytes`, true);
              run(`expand ${volume.name}`, () => api.expand(volume.name, size));
            }}
          >
            <p>Now {formatBytes(volume.spec.size)}. Volumes only grow; the filesystem on it is grown by its user.</p>
            <label>
              New size
              <input value={value} onInput={(e) => setValue(e.currentTarget.value)} required placeholder="e.g. 20 GiB" />
            </label>
            <Buttons onClose={onClose} action="Expand" />
          </form>
        </Dialog>
      );
    case 'snapshot':
      return (
        <Dialog title={`Snapshot of ${volume.name}`} onClose={onClose}>
          <form onSubmit={(e) => { e.preventDefault(); run(`snapshot of ${volume.name}`, () => api.createSnapshot(volume.name, value || undefined)); }}>
            <label>
              Name <span class="muted">(empty: one is made up)</span>
              <input value={value} onInput={(e) => setValue(e.currentTarget.value)} maxLength={63} />
            </label>
            <Buttons onClose={onClose} action="Take snapshot" />
          </form>
        </Dialog>
      );
    case 'backup': {
      const targets = state.list<BackupTarget>('backup-target').map((t) => t.name);
      return (
        <Dialog title={`Back up ${volume.name}`} onClose={onClose}>
          <form onSubmit={(e) => { e.preventDefault(); run(`backup of ${volume.name}`, () => api.createBackup(volume.name, undefined, value || undefined)); }}>
            <p>A new snapshot is taken and its blocks not yet in the target are uploaded.</p>
            <label>
              Target
              <select value={value} onChange={(e) => setValue(e.currentTarget.value)}>
                <option value="">the default target</option>
                {targets.map((t) => <option value={t}>{t}</option>)}
              </select>
            </label>
            <Buttons onClose={onClose} action="Back up" />
          </form>
        </Dialog>
      );
    }
    case 'clone':
      return <CreateVolumeDialog onClose={onClose} source="volume" from={volume.name} size={volume.spec.size} />;
    case 'clone-snapshot':
      return <CreateVolumeDialog onClose={onClose} source="snapshot" from={`${volume.name}/${action.snapshot}`} size={volume.spec.size} />;
    case 'replicas':
      return (
        <Dialog title={`Replicas of ${volume.name}`} onClose={onClose}>
          <form onSubmit={(e) => { e.preventDefault(); run(`replica count of ${volume.name}`, () => api.setReplicaCount(volume.name, Number(value))); }}>
            <p>Now {volume.spec.replicas}. More are built live; with fewer, the least useful go first.</p>
            <label>
              Replica count
              <input type="number" min={1} max={16} value={value} onInput={(e) => setValue(e.currentTarget.value)} required />
            </label>
            <Buttons onClose={onClose} action="Set" />
          </form>
        </Dialog>
      );
    case 'activate':
      return (
        <Confirm title={`Activate ${volume.name}`} action="Activate" typeToConfirm={volume.name} onClose={onClose}
          onConfirm={() => run(`activate ${volume.name}`, () => api.activate(volume.name, value === 'now'))}>
          <p>
            It becomes an ordinary volume for good: attachable, with snapshots and backups; it no longer follows{' '}
            <code>{volume.spec.standby?.source}</code>. Recurring jobs stay off until set.
          </p>
          <label class="inline">
            <input type="checkbox" checked={value === 'now'} onChange={(e) => setValue(e.currentTarget.checked ? 'now' : '')} />
            At once, with the backup restored last (otherwise the target is read and its newest backup restored first)
          </label>
        </Confirm>
      );
    case 'delete':
      return (
        <Confirm title={`Delete ${volume.name}`} action="Delete volume" typeToConfirm={volume.name} onClose={onClose}
          onConfirm={async () => {
            if (await perform(`delete ${volume.name}`, () => api.deleteVolume(volume.name))) location.hash = href('volumes');
          }}>
          <p>The volume, its replicas and its snapshots are removed for good. Its backups stay in the target.</p>
        </Confirm>
      );
    case 'revert':
      return (
        <Confirm title={`Revert ${volume.name} to ${action.snapshot}`} action="Revert" typeToConfirm={action.snapshot} onClose={onClose}
          onConfirm={() => run(`revert to ${action.snapshot}`, () => api.revertSnapshot(volume.name, action.snapshot))}>
          <p>The volume's data goes back to what it was at {action.snapshot}: what was written since is lost unless a later snapshot holds it.</p>
        </Confirm>
      );
    case 'delete-snapshot':
      return (
        <Confirm title={`Delete snapshot ${action.snapshot}`} action="Delete snapshot" onClose={onClose}
          onConfirm={() => run(`delete ${action.snapshot}`, () => api.deleteSnapshot(volume.name, action.snapshot))}>
          <p>It is marked removed; a purge merges its data away (its children keep what they need).</p>
        </Confirm>
      );
  }
}

function Buttons(props: { onClose: () => void; action: string }) {
  return (
    <div class="buttons">
      <button type="button" onClick={props.onClose}>Cancel</button>
      <button type="submit" class="primary">{props.action}</button>
    </div>
  );
}

/** Where a standby volume is in following its source's backups. */
function StandbyFacts(props: { volume: Volume }) {
  const { volume } = props;
  const status = volume.status.standby;
  return (
    <section aria-labelledby="standby-title">
      <h2 id="standby-title">Standby</h2>
      <dl class="facts">
        <dt>Follows</dt>
        <dd>
          <code>{volume.spec.standby?.source}</code>
        </dd>
        <dt>Holds backup</dt>
        <dd>
          {status?.last_restored ?? 'none yet'}
          {status?.last_restored_completed && <span class="muted"> (completed {formatAgo(status.last_restored_completed)})</span>}
        </dd>
        <dt>Newest backup</dt>
        <dd>{status?.newest ?? 'not read yet'}</dd>
        <dt>Lag</dt>
        <dd>
          {status ? `${status.lag_backups} backups, ${status.lag_seconds} s` : '—'}
        </dd>
        <dt>Last restore</dt>
        <dd>{status ? `${formatBytes(status.last_restore_bytes)} fetched` : '—'}</dd>
        {status?.restoring && (
          <>
            <dt>Restoring</dt>
            <dd>
              {status.restoring} {status.progress ?? ''}
            </dd>
          </>
        )}
        {volume.spec.standby?.activation && (
          <>
            <dt>Activation</dt>
            <dd>asked; waits {volume.spec.standby.activation.at_last_restored ? 'for a restore under way' : 'for the newest backup'}</dd>
          </>
        )}
        <dt>Last read</dt>
        <dd>{status?.last_read ? formatAgo(status.last_read) : 'never'}</dd>
      </dl>
    </section>
  );
}
