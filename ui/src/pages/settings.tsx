import { useEffect, useState } from 'preact/hooks';
import type { OpenApiDocument, SchemaObject, Settings } from '../api/client';
import { api } from '../api/client';
import { Header, perform, Columns } from '../components';
import { useCluster } from '../live';

export interface SettingInfo {
  name: string;
  description: string;
  default: unknown;
  type: string;
  choices: string[] | null;
}

/** Each setting's description, default, type and choices, from the OpenAPI document. */
export function settingInfo(doc: OpenApiDocument): Map<string, SettingInfo> {
  const schemas = doc.components?.schemas ?? {};
  const resolve = (schema: SchemaObject | undefined): SchemaObject | undefined => {
    const ref = schema?.$ref ?? schema?.allOf?.find((s) => s.$ref)?.$ref;
    return ref ? schemas[ref.replace('#/components/schemas/', '')] : schema;
  };
  const info = new Map<string, SettingInfo>();
  const visit = (schema: SchemaObject | undefined) => {
    if (!schema) return;
    for (const [name, property] of Object.entries(schema.properties ?? {})) {
      const target = resolve(property) ?? property;
      const type = Array.isArray(target.type) ? target.type.find((t) => t !== 'null') : target.type;
      const choices = (target.enum ?? target.oneOf?.flatMap((o) => o.enum ?? []))?.map(String) ?? null;
      info.set(name, {
        name,
        description: property.description ?? target.description ?? '',
        default: property.default,
        type: type ?? 'string',
        choices: choices && choices.length > 0 ? choices : null,
      });
    }
    for (const part of [...(schema.allOf ?? []), ...(schema.oneOf ?? [])]) visit(resolve(part));
  };
  visit(schemas.Settings);
  return info;
}

export function SettingsPage() {
  const state = useCluster();
  const settings = state.list<Settings>('settings')[0] as Record<string, unknown> | undefined;
  const [info, setInfo] = useState<Map<string, SettingInfo> | null>(null);
  useEffect(() => {
    api.openapi().then((doc) => setInfo(settingInfo(doc))).catch(() => setInfo(new Map()));
  }, []);
  if (!settings) return <Header title="Settings" />;
  return (
    <>
      <Header title="Settings" />
      <p class="muted">Cluster-wide; a change applies at once (engines pick up engine settings when they next start).</p>
      <table class="grid settings">
        <Columns names={['Setting', 'Value', 'Default', 'What it does']} />
        <tbody>
          {Object.keys(settings)
            .sort()
            .map((name) => (
              <SettingRow name={name} value={settings[name]} info={info?.get(name)} />
            ))}
        </tbody>
      </table>
    </>
  );
}

function SettingRow(props: { name: string; value: unknown; info: SettingInfo | undefined }) {
  const { name, value, info } = props;
  const [draft, setDraft] = useState(String(value));
  useEffect(() => setDraft(String(value)), [value]);
  const save = (next: unknown) => perform(`setting ${name}`, () => api.setSetting(name, next));
  const id = `setting-${name}`;
  let control;
  if (typeof value === 'boolean') {
    control = (
      <input id={id} type="checkbox" checked={value} onChange={(e) => save(e.currentTarget.checked)} />
    );
  } else if (info?.choices) {
    control = (
      <select id={id} value={String(value)} onChange={(e) => save(e.currentTarget.value)}>
        {info.choices.map((c) => <option value={c}>{c}</option>)}
      </select>
    );
  } else {
    control = (
      <form
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          save(typeof value === 'number' ? Number(draft) : draft);
        }}
      >
        <input id={id} value={draft} onInput={(e) => setDraft(e.currentTarget.value)} inputMode={typeof value === 'number' ? 'numeric' : undefined} />
        <button type="submit" disabled={draft === String(value)}>Save</button>
      </form>
    );
  }
  return (
    <tr key={name}>
      <th scope="row"><label for={id}>{name}</label></th>
      <td>{control}</td>
      <td>{info?.default === undefined ? '—' : String(info.default)}</td>
      <td>{info?.description ?? ''}</td>
    </tr>
  );
}
