// The REST API as the page calls it: JSON over fetch, with the session cookie (sent by
// the browser, out of script's reach) and the session's CSRF token on every request that
// changes something. The types are generated from the API's OpenAPI document
// (`npm run types`, from `openapi.json`, which a Rust test keeps equal to what the
// manager serves).

import type { components } from './types';

type Schemas = components['schemas'];
/**
 * An object as the server sends it: the document marks `status` optional (a client may
 * leave it out of a request), but every object read back has one.
 */
type Read<T extends { status?: unknown }> = Omit<T, 'status'> & { status: NonNullable<T['status']> };
export type Volume = Read<Schemas['Volume']>;
export type VolumeState = Schemas['VolumeState'];
export type Robustness = Schemas['Robustness'];
export type Replica = Read<Schemas['Replica']>;
export type Engine = Read<Schemas['Engine']>;
export type Node = Read<Schemas['Node']>;
export type DiskSpec = Schemas['DiskSpec'];
export type DiskStatus = Schemas['DiskStatus'];
export type Settings = Schemas['Settings'];
export type Snapshot = Schemas['Snapshot'];
export type Backup = Read<Schemas['Backup']>;
export type BackupTarget = Read<Schemas['BackupTarget']>;
export type RecurringJob = Read<Schemas['RecurringJob']>;
export type ClusterEvent = Schemas['Event'];
export type CreateVolume = Schemas['CreateVolume'];
export type CreateJob = Schemas['CreateJob'];
export type SetBackupTarget = Schemas['SetBackupTarget'];
export type UpdateNode = Schemas['UpdateNode'];
export type ClusterInfo = Schemas['ClusterInfo'];
export type DataLocality = Schemas['DataLocality'];

/** An error the API answered (its `message`), or a network failure (status 0). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

let csrfToken: string | null = null;
let onLoggedOut: () => void = () => {};

/** What to do when the server says the session ended (401). */
export function whenLoggedOut(handler: () => void): void {
  onLoggedOut = handler;
}

async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrfToken !== null) headers['X-CSRF-Token'] = csrfToken;
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
    });
  } catch (e) {
    throw new ApiError(0, `the manager did not answer (${String(e)})`);
  }
  const text = await response.text();
  let data: unknown = undefined;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    const message =
      typeof data === 'object' && data !== null && 'message' in data
        ? String((data as { message: unknown }).message)
        : `${response.status} ${response.statusText}`;
    if (response.status === 401 && path !== '/v1/session') {
      csrfToken = null;
      onLoggedOut();
    }
    throw new ApiError(response.status, message);
  }
  return data as T;
}

const enc = encodeURIComponent;

/** Trades the API token for a session (the cookie is set by the answer). */
export async function login(token: string): Promise<void> {
  const session = await request<{ csrf_token: string }>('POST', '/v1/session', { token });
  csrfToken = session.csrf_token;
}

/** Picks up this browser's session after a reload; false when there is none. */
export async function resumeSession(): Promise<boolean> {
  try {
    const session = await request<{ csrf_token: string }>('GET', '/v1/session');
    csrfToken = session.csrf_token;
    return true;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return false;
    throw e;
  }
}

export async function logout(): Promise<void> {
  await request<void>('DELETE', '/v1/session');
  csrfToken = null;
}

export const api = {
  cluster: () => request<ClusterInfo>('GET', '/v1/cluster'),
  createVolume: (body: CreateVolume) => request<unknown>('POST', '/v1/volumes', body),
  deleteVolume: (name: string) => request<unknown>('DELETE', `/v1/volumes/${enc(name)}`),
  attach: (name: string, node?: string) =>
    request<unknown>('POST', `/v1/volumes/${enc(name)}/attach`, node ? { node } : {}),
  detach: (name: string) => request<unknown>('POST', `/v1/volumes/${enc(name)}/detach`),
  expand: (name: string, size: number) =>
    request<unknown>('POST', `/v1/volumes/${enc(name)}/expand`, { size }),
  setReplicaCount: (name: string, replicas: number) =>
    request<unknown>('POST', `/v1/volumes/${enc(name)}/replica-count`, { replicas }),
  setDataLocality: (name: string, data_locality: DataLocality) =>
    request<unknown>('POST', `/v1/volumes/${enc(name)}/data-locality`, { data_locality }),
  salvage: (name: string) => request<unknown>('POST', `/v1/volumes/${enc(name)}/salvage`),
  syncStandby: (name: string) => request<unknown>('POST', `/v1/volumes/${enc(name)}/sync`),
  activate: (name: string, at_last_restored: boolean) =>
    request<unknown>('POST', `/v1/volumes/${enc(name)}/activate`, { at_last_restored }),
  removeReplica: (volume: string, replica: string) =>
    request<unknown>('DELETE', `/v1/volumes/${enc(volume)}/replicas/${enc(replica)}`),
  snapshots: (volume: string) => request<Snapshot[]>('GET', `/v1/volumes/${enc(volume)}/snapshots`),
  createSnapshot: (volume: string, name?: string) =>
    request<Snapshot>('POST', `/v1/volumes/${enc(volume)}/snapshots`, name ? { name } : {}),
  deleteSnapshot: (volume: string, snapshot: string) =>
    request<unknown>('DELETE', `/v1/volumes/${enc(volume)}/snapshots/${enc(snapshot)}`),
  revertSnapshot: (volume: string, snapshot: string) =>
    request<unknown>('POST', `/v1/volumes/${enc(volume)}/snapshots/${enc(snapshot)}/revert`),
  purgeSnapshots: (volume: string) =>
    request<unknown>('POST', `/v1/volumes/${enc(volume)}/snapshot-purge`),
  createBackup: (volume: string, snapshot?: string, target?: string) =>
    request<Backup>('POST', '/v1/backups', { volume, snapshot, target }),
  deleteBackup: (name: string) => request<unknown>('DELETE', `/v1/backups/${enc(name)}`),
  setBackupTarget: (name: string, body: SetBackupTarget) =>
    request<BackupTarget>('PUT', `/v1/backup-targets/${enc(name)}`, body),
  deleteBackupTarget: (name: string) =>
    request<unknown>('DELETE', `/v1/backup-targets/${enc(name)}`),
  updateNode: (name: string, body: UpdateNode) =>
    request<Node>('PUT', `/v1/nodes/${enc(name)}`, body),
  createJob: (body: CreateJob) => request<RecurringJob>('POST', '/v1/recurring-jobs', body),
  deleteJob: (name: string) => request<unknown>('DELETE', `/v1/recurring-jobs/${enc(name)}`),
  setSetting: (name: string, value: unknown) =>
    request<Settings>('PUT', `/v1/settings/${enc(name)}`, { value }),
  openapi: () => request<OpenApiDocument>('GET', '/v1/openapi.json'),
};

/** The part of the OpenAPI document the settings page reads (descriptions, defaults). */
export interface OpenApiDocument {
  components?: { schemas?: Record<string, SchemaObject> };
}
export interface SchemaObject {
  description?: string;
  type?: string | string[];
  default?: unknown;
  properties?: Record<string, SchemaObject>;
  $ref?: string;
  allOf?: SchemaObject[];
  oneOf?: SchemaObject[];
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
}
