import { useState } from 'preact/hooks';
import type { Node, Replica } from '../api/client';
import { api } from '../api/client';
import { Badge, CapacityBar, Confirm, Header, perform, Columns } from '../components';
import { fillFraction, formatAgo, formatPercent, rebuildFraction } from '../format';
import { useCluster } from '../live';
import { href } from '../router';

export function NodesPage() {
  const state = useCluster();
  const nodes = state.list<Node>('node').sort((a, b) => a.name.localeCompare(b.name));
  const replicas = state.list<Replica>('replica');
  return (
    <>
      <Header title="Nodes and disks" />
      {nodes.map((node) => (
        <NodeCard node={node} replicas={replicas.filter((r) => r.spec.node === node.name)} all={replicas} />
      ))}
    </>
  );
}

function NodeCard(props: { node: Node; replicas: Replica[]; all: Replica[] }) {
  const { node, replicas } = props;
  const [tags, setTags] = useState((node.spec.tags ?? []).join(', '));
  const [confirmEvict, setConfirmEvict] = useState(false);
  const id = `node-${node.name}`;
  const update = (what: string, body: Parameters<typeof api.updateNode>[1]) =>
    perform(`${node.name}: ${what}`, () => api.updateNode(node.name, body));
  return (
    <section class="card node" aria-labelledby={id} data-node={node.name}>
      <div class="section-header">
        <h2 id={id}>
          {node.name} <Badge state={node.status.ready ? 'up' : 'down'} />
        </h2>
        <div class="actions">
          <label class="inline">
            <input
              type="checkbox"
              checked={node.spec.allow_scheduling}
              onChange={(e) => update('scheduling', { allow_scheduling: e.currentTarget.checked })}
            />
            New replicas may be placed here
          </label>
          {node.spec.evict ? (
            <button type="button" onClick={() => update('stop eviction', { evict: false })}>
              Stop eviction
            </button>
          ) : (
            <button type="button" class="danger" onClick={() => setConfirmEvict(true)}>
              Evict replicas
            </button>
          )}
        </div>
      </div>
      <p class="muted">
        {node.spec.address}
        {node.spec.zone ? `, zone ${node.spec.zone}` : ''}; heartbeat {formatAgo(node.status.heartbeat)}
        {node.spec.evict ? '; evicting: its replicas are rebuilt elsewhere, then removed' : ''}
      </p>
      <form
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          update('tags', { tags: tags.split(',').map((t) => t.trim()).filter(Boolean) });
        }}
      >
        <label>
          Tags
          <input value={tags} onInput={(e) => setTags(e.currentTarget.value)} placeholder="ssd, fast" />
        </label>
        <button type="submit">Save tags</button>
      </form>
      <h3>Disks</h3>
      {node.status.disks.map((disk) => {
        const spec = node.spec.disks.find((d) => d.name === disk.name);
        return (
          <div class="disk">
            <CapacityBar
              label={`${disk.name} (${spec?.path ?? '?'}), ${disk.replicas} replicas${spec && !spec.allow_scheduling ? ', scheduling off' : ''}`}
              used={disk.capacity - disk.available}
              total={disk.capacity}
            />
          </div>
        );
      })}
      <h3>Replicas</h3>
      {replicas.length === 0 ? (
        <p>None.</p>
      ) : (
        <table class="grid">
          <Columns names={['Replica', 'Volume', 'State', 'Progress']} />
          <tbody>
            {replicas.map((replica) => {
              // While the node is evicted, a replica's move shows as its replacement's
              // rebuild (or fill) on another node.
              const replacement = node.spec.evict
                ? props.all.find(
                    (r) =>
                      r.spec.volume === replica.spec.volume &&
                      r.spec.node !== node.name &&
                      (r.status.state === 'rebuilding' || r.status.fill_progress),
                  )
                : undefined;
              const progress = rebuildFraction((replacement ?? replica).status.rebuild) ??
                (replacement ? fillFraction(replacement.status.fill_progress) : null);
              return (
                <tr key={replica.name}>
                  <td>
                    {replica.name}
                    {replica.spec.retire ? ' (retiring)' : ''}
                  </td>
                  <td>
                    <a href={href('volumes', replica.spec.volume)}>{replica.spec.volume}</a>
                  </td>
                  <td>
                    <Badge state={replica.status.state} />
                  </td>
                  <td>
                    {progress !== null ? (
                      <span class="progress-cell">
                        <progress max={1} value={progress} aria-label={`${replacement ? `${replacement.name} on ${replacement.spec.node}` : replica.name} rebuilt ${formatPercent(progress)}`} />
                        <span>
                          {formatPercent(progress)}
                          {replacement ? ` (moving to ${replacement.spec.node})` : ''}
                        </span>
                      </span>
                    ) : (
                      '—'
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      {confirmEvict && (
        <Confirm
          title={`Evict ${node.name}`}
          action="Evict"
          onClose={() => setConfirmEvict(false)}
          onConfirm={() => update('evict', { evict: true, allow_scheduling: false })}
        >
          <p>
            Every replica on {node.name} is rebuilt on other nodes, then removed from it, and no new
            replica is placed here. Volumes stay online meanwhile.
          </p>
        </Confirm>
      )}
    </section>
  );
}
