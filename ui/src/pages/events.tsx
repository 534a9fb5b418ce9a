import { useState } from 'preact/hooks';
import type { ClusterEvent } from '../api/client';
import { Header, Columns } from '../components';
import { formatAgo, formatTime } from '../format';
import { useCluster } from '../live';
import { href } from '../router';

/** The newest `count` events, newest first. */
export function newestEvents(events: ClusterEvent[], count: number): ClusterEvent[] {
  return [...events].sort((a, b) => b.time.localeCompare(a.time)).slice(0, count);
}

export function EventRows(props: { events: ClusterEvent[] }) {
  return (
    <table class="grid">
      <Columns names={['When', 'Object', 'Reason', 'Message']} />
      <tbody>
        {props.events.map((event) => (
          <tr key={event.name}>
            <td class="nowrap" title={formatTime(event.time)}>
              {formatAgo(event.time)}
            </td>
            <td>
              {event.object_kind}{' '}
              {event.volume ? <a href={href('volumes', event.volume)}>{event.object}</a> : event.object}
            </td>
            <td>{event.reason}</td>
            <td>{event.message}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function EventsPage() {
  const state = useCluster();
  const [filter, setFilter] = useState('');
  const words = filter.toLowerCase().split(/\s+/).filter(Boolean);
  const events = newestEvents(state.list<ClusterEvent>('event'), Number.MAX_SAFE_INTEGER).filter(
    (event) => {
      const text = `${event.object_kind} ${event.object} ${event.reason} ${event.message}`.toLowerCase();
      return words.every((word) => text.includes(word));
    },
  );
  return (
    <>
      <Header title="Events">
        <label>
          Filter
          <input type="search" value={filter} onInput={(e) => setFilter(e.currentTarget.value)} />
        </label>
      </Header>
      <p class="muted">
        The newest {events.length} events the manager recorded (this page keeps up to 500), as they
        happen.
      </p>
      <EventRows events={events} />
    </>
  );
}
