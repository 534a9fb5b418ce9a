import { useMemo, useState } from 'preact/hooks';
import type { Backup, CreateVolume, DataLocality, Node, Replica, Settings, Volume } from '../api/client';
import { api } from '../api/client';
import { filterVolumes, HEALTHS, replicasByVolume, type Sort, type SortKey, volumeHealth } from '../cluster';
import { Badge, Confirm, Dialog, Header, perform, VirtualRows } from '../components';
import { formatBytes, parseSize } from '../format';
import { useCluster } from '../live';
import { href } from '../router';

const ROW_HEIGHT = 40;
const COLUMNS: [SortKey | null, string][] = [
  ['name', 'Name'],
  ['health', 'State'],
  ['size', 'Size'],
  ['replicas', 'Replicas'],
  ['node', 'Attached to'],
  [null, 'Labels'],
];

/** `k=v, k2=v2` as labels; an error message when it is not that. */
export function parseLabels(text: string): Record<string, string> | string {
  const labels: Record<string, string> = {};
  for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const at = part.indexOf('=');
    if (at <= 0) return `label ${JSON.stringify(part)} is not KEY=VALUE`;
    labels[part.slice(0, at).trim()] = part.slice(at + 1).trim();
  }
  return labels;
}

export function VolumesPage() {
  const state = useCluster();
  const [text, setText] = useState('');
  const [health, setHealth] = useState('');
  const [node, setNode] = useState('');
  const [sort, setSort] = useState<Sort>({ key: 'name', descending: false });
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [dialog, setDialog] = useState<'create' | 'delete' | 'detach' | null>(null);
  const volumes = state.list<Volume>('volume');
  const replicas = useMemo(() => replicasByVolume(state.list<Replica>('replica')), [state.version]);
  const shown = useMemo(
    () => filterVolumes(volumes, replicas, { text, health, node }, sort),
    [state.version, text, health, node, sort],
  );
  const nodes = state.list<Node>('node').map((n) => n.name).sort();
  const chosen = [...selected].filter((name) => state.get('volume', name));
  const allShownSelected = shown.length > 0 && shown.every((v) => selected.has(v.name));
  const toggle = (name: string) => {
    const next = new Set(selected);
    if (next.has(name)) next.delete(name);
    else next.add(name);
    setSelected(next);
  };
  const listHeight = Math.max(240, Math.min(shown.length * ROW_HEIGHT, window.innerHeight - 300));
  return (
    <>
      <Header title="Volumes">
        <button type="button" class="primary" onClick={() => setDialog('create')}>
          Create volume
        </button>
      </Header>
      <div class="toolbar" role="search">
        <label>
          Filter
          <input
            type="search"
            placeholder="name or label key=value"
            value={text}
            onInput={(e) => setText(e.currentTarget.value)}
          />
        </label>
        <label>
          State
          <select value={health} onChange={(e) => setHealth(e.currentTarget.value)}>
            <option value="">any</option>
            {HEALTHS.map((h) => (
              <option value={h}>{h}</option>
            ))}
          </select>
        </label>
        <label>
          Node
          <select value={node} onChange={(e) => setNode(e.currentTarget.value)}>
            <option value="">any</option>
            {nodes.map((n) => (
              <option value={n}>{n}</option>
            ))}
          </select>
        </label>
        <span class="muted" aria-live="polite">
          {shown.length} of {volumes.length} volumes
        </span>
      </div>
      {chosen.length > 0 && (
        <div class="bulk" role="region" aria-label="Selected volumes">
          <span>{chosen.length} selected</span>
          <button type="button" onClick={() => setDialog('detach')}>
            Detach
          </button>
          <button type="button" class="danger" onClick={() => setDialog('delete')}>
            Delete
          </button>
          <button type="button" onClick={() => setSelected(new Set())}>
            Clear selection
          </button>
        </div>
      )}
      <VirtualRows
        items={shown}
        rowHeight={ROW_HEIGHT}
        height={listHeight}
        label="Volumes"
        header={
          <div role="row" class="virtual-row head">
            <span role="columnheader" class="col-check">
              <input
                type="checkbox"
                aria-label="Select every volume shown"
                checked={allShownSelected}
                onChange={() =>
                  setSelected(allShownSelected ? new Set() : new Set(shown.map((v) => v.name)))
                }
              />
            </span>
            {COLUMNS.map(([key, title]) => (
              <span
                role="columnheader"
                class={`col-${title.toLowerCase().replace(/ /g, '-')}`}
                aria-sort={
                  key === sort.key ? (sort.descending ? 'descending' : 'ascending') : undefined
                }
              >
                {key ? (
                  <button
                    type="button"
                    class="sort"
                    onClick={() =>
                      setSort({ key, descending: sort.key === key ? !sort.descending : false })
                    }
                  >
                    {title}
                    {key === sort.key ? (sort.descending ? ' ▼' : ' ▲') : ''}
                  </button>
                ) : (
                  title
                )}
              </span>
            ))}
          </div>
        }
        row={(volume) => {
          const list = replicas.get(volume.name) ?? [];
          const inSync = list.filter((r) => r.status.state === 'running' && !r.spec.retire).length;
          const labels = Object.entries((volume.spec.labels ?? {}) as Record<string, string>);
          return (
            <>
              <span role="cell" class="col-check">
                <input
                  type="checkbox"
                  aria-label={`Select ${volume.name}`}
                  checked={selected.has(volume.name)}
                  onChange={() => toggle(volume.name)}
                />
              </span>
              <span role="cell" class="col-name">
                <a href={href('volumes', volume.name)}>{volume.name}</a>
              </span>
              <span role="cell" class="col-state">
                <Badge state={volumeHealth(volume)} />
              </span>
              <span role="cell" class="col-size">
                {formatBytes(volume.spec.size)}
              </span>
              <span role="cell" class="col-replicas">
                {inSync}/{volume.spec.replicas}
              </span>
              <span role="cell" class="col-attached-to">
                {volume.spec.attached_node ?? '—'}
              </span>
              <span role="cell" class="col-labels">
                {labels.map(([k, v]) => `${k}=${v}`).join(', ')}
              </span>
            </>
          );
        }}
      />
      {dialog === 'create' && <CreateVolumeDialog onClose={() => setDialog(null)} />}
      {dialog === 'delete' && (
        <Confirm
          title={`Delete ${chosen.length} volumes`}
          action={`Delete ${chosen.length} volumes`}
          typeToConfirm={chosen.length > 1 ? `delete ${chosen.length}` : chosen[0]}
          onClose={() => setDialog(null)}
          onConfirm={async () => {
            for (const name of chosen) await perform(`delete ${name}`, () => api.deleteVolume(name));
            setSelected(new Set());
          }}
        >
          <p>
            These volumes and all their replicas, snapshots and data are removed for good (their
            backups stay in the backup target):
          </p>
          <p class="names">{chosen.join(', ')}</p>
        </Confirm>
      )}
      {dialog === 'detach' && (
        <Confirm
          title={`Detach ${chosen.length} volumes`}
          action="Detach"
          onClose={() => setDialog(null)}
          onConfirm={async () => {
            for (const name of chosen) await perform(`detach ${name}`, () => api.detach(name));
          }}
        >
          <p>Their engines stop: a client still using one of them gets I/O errors.</p>
          <p class="names">{chosen.join(', ')}</p>
        </Confirm>
      )}
    </>
  );
}

type Source = 'none' | 'snapshot' | 'volume' | 'backup';

/** Create a volume: empty, or from a snapshot, a volume (a clone) or a backup. */
export function CreateVolumeDialog(props: {
  onClose: () => void;
  source?: Source;
  from?: string;
  size?: number;
}) {
  const state = useCluster();
  const settings = state.list<Settings>('settings')[0];
  const [name, setName] = useState('');
  const [size, setSize] = useState(props.size ? String(props.size) : '1 GiB');
  const [replicas, setReplicas] = useState(String(settings?.default_replica_count ?? 3));
  const [locality, setLocality] = useState<DataLocality>(settings?.default_data_locality ?? 'disabled');
  const [source, setSource] = useState<Source>(props.source ?? 'none');
  const [from, setFrom] = useState(props.from ?? '');
  const [labels, setLabels] = useState('');
  const [standby, setStandby] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const backups = state.list<Backup>('backup').filter((b) => b.status.state === 'completed' && b.status.url);
  const volumes = state.list<Volume>('volume').map((v) => v.name).sort();
  return (
    <Dialog title="Create volume" onClose={props.onClose}>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          const bytes = parseSize(size);
          const parsedLabels = parseLabels(labels);
          if (bytes === null) return setError(`size ${JSON.stringify(size)}: write it as 10 GiB, 512M or bytes`);
          if (typeof parsedLabels === 'string') return setError(parsedLabels);
          const body: CreateVolume = {
            name,
            size: bytes,
            replicas: Number(replicas),
            data_locality: locality,
            labels: parsedLabels,
          };
          if (source === 'snapshot') body.from_snapshot = from;
          if (source === 'volume') body.from_volume = from;
          if (source === 'backup') body.from_backup = from;
          if (source === 'backup' && standby) body.standby = true;
          if (await perform(`create ${name}`, () => api.createVolume(body))) props.onClose();
        }}
      >
        <label>
          Name
          <input value={name} onInput={(e) => setName(e.currentTarget.value)} required maxLength={63} pattern="[A-Za-z0-9._\-]+" />
        </label>
        <label>
          Size <span class="muted">(rounded up to 4 KiB)</span>
          <input value={size} onInput={(e) => setSize(e.currentTarget.value)} required />
        </label>
        <label>
          Replicas
          <input type="number" min={1} max={16} value={replicas} onInput={(e) => setReplicas(e.currentTarget.value)} />
        </label>
        <label>
          Data locality
          <select value={locality} onChange={(e) => setLocality(e.currentTarget.value as DataLocality)}>
            <option value="disabled">disabled</option>
            <option value="best-effort">best-effort (a replica follows the engine's node)</option>
          </select>
        </label>
        <label>
          Content
          <select value={source} onChange={(e) => { setSource(e.currentTarget.value as Source); setFrom(''); }}>
            <option value="none">empty</option>
            <option value="snapshot">a snapshot of a volume</option>
            <option value="volume">a clone of a volume as it is now</option>
            <option value="backup">a backup</option>
          </select>
        </label>
        {source === 'snapshot' && (
          <label>
            Snapshot (VOLUME/SNAPSHOT)
            <input value={from} onInput={(e) => setFrom(e.currentTarget.value)} required />
          </label>
        )}
        {source === 'volume' && (
          <label>
            Volume
            <select value={from} onChange={(e) => setFrom(e.currentTarget.value)} required>
              <option value="">choose…</option>
              {volumes.map((v) => (
                <option value={v}>{v}</option>
              ))}
            </select>
          </label>
        )}
        {source === 'backup' && (
          <label>
            Backup <span class="muted">(the size must be the backup's volume size)</span>
            <select
              value={from}
              onChange={(e) => {
                const url = e.currentTarget.value;
                setFrom(url);
                const backup = backups.find((b) => b.status.url === url);
                if (backup) setSize(String(backup.status.volume_size));
              }}
              required
            >
              <option value="">choose…</option>
              {backups.map((b) => (
                <option value={b.status.url ?? ''}>
                  {b.spec.volume} / {b.name}
                </option>
              ))}
            </select>
          </label>
        )}
        {source === 'backup' && (
          <label class="inline">
            <input type="checkbox" checked={standby} onChange={(e) => setStandby(e.currentTarget.checked)} />
            Standby (disaster recovery): keep restoring each newer backup of this volume until activated; the size
            must be the newest backup's
          </label>
        )}
        <label>
          Labels <span class="muted">(key=value, comma-separated)</span>
          <input value={labels} onInput={(e) => setLabels(e.currentTarget.value)} />
        </label>
        {error && (
          <p class="form-error" role="alert">
            {error}
          </p>
        )}
        <div class="buttons">
          <button type="button" onClick={props.onClose}>
            Cancel
          </button>
          <button type="submit" class="primary">
            Create
          </button>
        </div>
      </form>
    </Dialog>
  );
}
