import { useState } from 'preact/hooks';
import type { BackupTarget, CreateJob, RecurringJob } from '../api/client';
import { api } from '../api/client';
import { Confirm, Dialog, Header, perform, Columns } from '../components';
import { formatAgo } from '../format';
import { useCluster } from '../live';

const TASKS = ['snapshot', 'backup', 'snapshot-cleanup', 'snapshot-delete'] as const;

export function JobsPage() {
  const state = useCluster();
  const jobs = state.list<RecurringJob>('job').sort((a, b) => a.name.localeCompare(b.name));
  const [creating, setCreating] = useState(false);
  const [deleting, setDeleting] = useState<string | null>(null);
  return (
    <>
      <Header title="Recurring jobs">
        <button type="button" class="primary" onClick={() => setCreating(true)}>
          Create job
        </button>
      </Header>
      {jobs.length === 0 ? (
        <p>No recurring jobs. A volume runs the jobs it names and those of the groups it is in.</p>
      ) : (
        <table class="grid">
          <Columns names={['Job', 'Task', 'Schedule', 'Keeps', 'Groups', 'Last run', 'Next run', 'Last result', '']} />
          <tbody>
            {jobs.map((job) => (
              <tr key={job.name}>
                <td>{job.name}</td>
                <td>{job.spec.task}{job.spec.target ? ` to ${job.spec.target}` : ''}</td>
                <td><code>{job.spec.cron}</code></td>
                <td>{job.spec.retain}</td>
                <td>{(job.spec.groups ?? []).join(', ') || '—'}</td>
                <td>{formatAgo(job.status.last_run)}</td>
                <td>{job.status.next_run ?? '—'}</td>
                <td>{job.status.last_result || '—'}</td>
                <td>
                  <button type="button" class="link" onClick={() => setDeleting(job.name)}>Delete</button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {creating && <CreateJobDialog onClose={() => setCreating(false)} />}
      {deleting && (
        <Confirm title={`Delete job ${deleting}`} action="Delete job" onClose={() => setDeleting(null)}
          onConfirm={() => perform(`delete job ${deleting}`, () => api.deleteJob(deleting))}>
          <p>It stops running; the snapshots and backups it made stay.</p>
        </Confirm>
      )}
    </>
  );
}

function CreateJobDialog(props: { onClose: () => void }) {
  const state = useCluster();
  const targets = state.list<BackupTarget>('backup-target').map((t) => t.name);
  const [name, setName] = useState('');
  const [task, setTask] = useState<(typeof TASKS)[number]>('snapshot');
  const [cron, setCron] = useState('0 * * * *');
  const [retain, setRetain] = useState('5');
  const [groups, setGroups] = useState('default');
  const [target, setTarget] = useState('');
  return (
    <Dialog title="Create recurring job" onClose={props.onClose}>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          const body = {
            name,
            spec: {
              task,
              cron,
              retain: Number(retain),
              groups: groups.split(',').map((g) => g.trim()).filter(Boolean),
              target: task === 'backup' && target ? target : undefined,
            },
          } as CreateJob;
          if (await perform(`create job ${name}`, () => api.createJob(body))) props.onClose();
        }}
      >
        <label>Name<input value={name} onInput={(e) => setName(e.currentTarget.value)} required /></label>
        <label>
          Task
          <select value={task} onChange={(e) => setTask(e.currentTarget.value as (typeof TASKS)[number])}>
            {TASKS.map((t) => <option value={t}>{t}</option>)}
          </select>
        </label>
        <label>Schedule <span class="muted">(cron, UTC: MIN HOUR DAY MONTH WEEKDAY; 6 fields put seconds first)</span>
          <input value={cron} onInput={(e) => setCron(e.currentTarget.value)} required />
        </label>
        <label>Keep the newest<input type="number" min={0} max={1000} value={retain} onInput={(e) => setRetain(e.currentTarget.value)} /></label>
        <label>Groups <span class="muted">(comma-separated)</span><input value={groups} onInput={(e) => setGroups(e.currentTarget.value)} /></label>
        {task === 'backup' && (
          <label>
            Target
            <select value={target} onChange={(e) => setTarget(e.currentTarget.value)}>
              <option value="">the default target</option>
              {targets.map((t) => <option value={t}>{t}</option>)}
            </select>
          </label>
        )}
        <div class="buttons">
          <button type="button" onClick={props.onClose}>Cancel</button>
          <button type="submit" class="primary">Create</button>
        </div>
      </form>
    </Dialog>
  );
}
