import type { ClusterEvent, Node, Volume } from '../api/client';
import { capacity, countByHealth, HEALTHS } from '../cluster';
import { Badge, CapacityBar, Header } from '../components';
import { formatBytes, formatTime } from '../format';
import { useCluster } from '../live';
import { href } from '../router';
import { EventRows, newestEvents } from './events';

export function Dashboard() {
  const state = useCluster();
  const volumes = state.list<Volume>('volume');
  const nodes = state.list<Node>('node');
  const room = capacity(nodes);
  const counts = countByHealth(volumes);
  const up = nodes.filter((n) => n.status.ready).length;
  const events = newestEvents(state.list<ClusterEvent>('event'), 10);
  return (
    <>
      <Header title="Dashboard" />
      <div class="cards">
        <section class="card" aria-labelledby="capacity-title">
          <h2 id="capacity-title">Capacity</h2>
          <CapacityBar label="Used on disks" used={room.used} total={room.total} />
          <CapacityBar label="Scheduled to replicas" used={room.scheduled} total={room.total} />
          <CapacityBar label="Reserved" used={room.reserved} total={room.total} />
          <p>
            {formatBytes(room.schedulable)} free for new replicas, on {formatBytes(room.total)} of
            disks.
          </p>
        </section>
        <section class="card" aria-labelledby="volumes-title">
          <h2 id="volumes-title">Volumes</h2>
          <p class="big">{volumes.length}</p>
          <ul class="counts">
            {HEALTHS.filter((h) => counts[h] > 0 || ['healthy', 'degraded', 'faulted', 'detached'].includes(h)).map(
              (health) => (
                <li>
                  <Badge state={health} /> {counts[health]}
                </li>
              ),
            )}
          </ul>
          <a href={href('volumes')}>All volumes</a>
        </section>
        <section class="card" aria-labelledby="nodes-title">
          <h2 id="nodes-title">Nodes</h2>
          <p class="big">
            {up} of {nodes.length} up
          </p>
          <ul class="counts">
            {nodes.map((node) => (
              <li>
                <Badge state={node.status.ready ? 'up' : 'down'} /> {node.name}
              </li>
            ))}
          </ul>
          <a href={href('nodes')}>Nodes and disks</a>
        </section>
      </div>
      <section aria-labelledby="events-title">
        <h2 id="events-title">Latest events</h2>
        {events.length === 0 ? <p>No events yet.</p> : <EventRows events={events} />}
        <a href={href('events')}>All events</a>
        <p class="muted">Times are in this browser's time zone; now {formatTime(new Date().toISOString())}.</p>
      </section>
    </>
  );
}
