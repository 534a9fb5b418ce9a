import { useState } from 'preact/hooks';
import type { Backup, BackupTarget } from '../api/client';
import { api } from '../api/client';
import { Badge, Confirm, Dialog, Header, perform, Columns } from '../components';
import { formatAgo, formatBytes } from '../format';
import { useCluster } from '../live';
import { href } from '../router';
import { CreateVolumeDialog } from './volumes';

export function BackupsPage() {
  const state = useCluster();
  const targets = state.list<BackupTarget>('backup-target').sort((a, b) => a.name.localeCompare(b.name));
  const backups = state.list<Backup>('backup');
  const [editing, setEditing] = useState<BackupTarget | 'new' | null>(null);
  const [removing, setRemoving] = useState<string | null>(null);
  const [restoring, setRestoring] = useState<Backup | null>(null);
  const [deleting, setDeleting] = useState<Backup | null>(null);
  const byVolume = new Map<string, Backup[]>();
  for (const backup of backups) {
    const list = byVolume.get(backup.spec.volume) ?? [];
    list.push(backup);
    byVolume.set(backup.spec.volume, list);
  }
  const volumes = [...byVolume.keys()].sort();
  return (
    <>
      <Header title="Backups">
        <button type="button" class="primary" onClick={() => setEditing('new')}>
          Add backup target
        </button>
      </Header>
      <section aria-labelledby="targets-title">
        <h2 id="targets-title">Backup targets</h2>
        {targets.length === 0 ? (
          <p>No backup target: add one (S3, or a directory the manager allows) to back volumes up.</p>
        ) : (
          <table class="grid">
            <Columns names={['Target', 'URL', 'Credentials', 'Available', 'Backups', 'Last synced', '']} />
            <tbody>
              {targets.map((target) => (
                <tr key={target.name}>
                  <td>{target.name}</td>
                  <td><code>{target.spec.url}</code>{target.spec.endpoint ? <> at <code>{target.spec.endpoint}</code></> : null}</td>
                  <td>{target.spec.has_credentials ? 'has credentials' : 'none'}</td>
                  <td>
                    <Badge state={target.status.available ? 'available' : 'unavailable'} /> {target.status.message}
                  </td>
                  <td>{target.status.backups}</td>
                  <td>{formatAgo(target.status.last_synced)}</td>
                  <td>
                    <button type="button" class="link" onClick={() => setEditing(target)}>Edit</button>{' '}
                    <button type="button" class="link" onClick={() => setRemoving(target.name)}>Remove</button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
      <section aria-labelledby="backup-volumes-title">
        <h2 id="backup-volumes-title">Backup volumes</h2>
        {volumes.length === 0 && <p>No backups yet.</p>}
        {volumes.map((volume) => (
          <details open>
            <summary>
              {volume} ({byVolume.get(volume)?.length} backups{state.get('volume', volume) ? '' : '; the volume is gone'})
            </summary>
            {state.get('volume', volume) && (
              <p>
                <a href={href('volumes', volume)}>Volume {volume}</a>
              </p>
            )}
            <table class="grid">
              <Columns names={['Backup', 'Target', 'State', 'Volume size', 'Uploaded', 'Completed', '']} />
              <tbody>
                {(byVolume.get(volume) ?? [])
                  .sort((a, b) => b.name.localeCompare(a.name))
                  .map((backup) => (
                    <tr key={backup.name}>
                      <td>{backup.name}</td>
                      <td>{backup.spec.target}</td>
                      <td><Badge state={backup.status.state} /> {backup.status.progress || backup.status.message}</td>
                      <td>{formatBytes(backup.status.volume_size)}</td>
                      <td>{formatBytes(backup.status.uploaded_bytes)}</td>
                      <td>{formatAgo(backup.status.completed)}</td>
                      <td>
                        {backup.status.url && (
                          <button type="button" class="link" onClick={() => setRestoring(backup)}>Restore</button>
                        )}{' '}
                        <button type="button" class="link" onClick={() => setDeleting(backup)}>Delete</button>
                      </td>
                    </tr>
                  ))}
              </tbody>
            </table>
          </details>
        ))}
      </section>
      {editing && <TargetDialog target={editing === 'new' ? null : editing} onClose={() => setEditing(null)} />}
      {removing && (
        <Confirm title={`Remove target ${removing}`} action="Remove target" onClose={() => setRemoving(null)}
          onConfirm={() => perform(`remove target ${removing}`, () => api.deleteBackupTarget(removing))}>
          <p>Shorthorn forgets the target; the backups in it stay where they are.</p>
        </Confirm>
      )}
      {restoring && (
        <CreateVolumeDialog onClose={() => setRestoring(null)} source="backup" from={restoring.status.url ?? ''} size={restoring.status.volume_size} />
      )}
      {deleting && (
        <Confirm title={`Delete backup ${deleting.name}`} action="Delete backup" typeToConfirm={deleting.name} onClose={() => setDeleting(null)}
          onConfirm={() => perform(`delete backup ${deleting.name}`, () => api.deleteBackup(deleting.name))}>
          <p>The backup is removed from {deleting.spec.target}; blocks no other backup uses are deleted.</p>
        </Confirm>
      )}
    </>
  );
}

function TargetDialog(props: { target: BackupTarget | null; onClose: () => void }) {
  const [name, setName] = useState(props.target?.name ?? '');
  const [url, setUrl] = useState(props.target?.spec.url ?? '');
  const [endpoint, setEndpoint] = useState(props.target?.spec.endpoint ?? '');
  const [accessKey, setAccessKey] = useState('');
  const [secret, setSecret] = useState('');
  return (
    <Dialog title={props.target ? `Edit target ${props.target.name}` : 'Add backup target'} onClose={props.onClose}>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          const body = {
            url,
            endpoint: endpoint || undefined,
            access_key_id: accessKey || undefined,
            secret_access_key: secret || undefined,
          };
          if (await perform(`target ${name}`, () => api.setBackupTarget(name, body))) props.onClose();
        }}
      >
        <label>Name<input value={name} onInput={(e) => setName(e.currentTarget.value)} required disabled={props.target !== null} /></label>
        <label>URL <span class="muted">(s3://bucket@region/path, file:///path or nfs://host:/path)</span><input value={url} onInput={(e) => setUrl(e.currentTarget.value)} required /></label>
        <label>S3 endpoint <span class="muted">(empty for AWS)</span><input value={endpoint} onInput={(e) => setEndpoint(e.currentTarget.value)} /></label>
        <label>Access key id<input value={accessKey} onInput={(e) => setAccessKey(e.currentTarget.value)} autocomplete="off" /></label>
        <label>
          Secret access key <span class="muted">(stored by the manager, never shown again)</span>
          <input type="password" value={secret} onInput={(e) => setSecret(e.currentTarget.value)} autocomplete="new-password" />
        </label>
        <div class="buttons">
          <button type="button" onClick={props.onClose}>Cancel</button>
          <button type="submit" class="primary">Save</button>
        </div>
      </form>
    </Dialog>
  );
}
