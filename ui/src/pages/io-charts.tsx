import { useEffect, useState } from 'preact/hooks';
import { addSample, type IoSample, linePoints, niceCeiling } from '../charts';
import { formatBytes } from '../format';

const WIDTH = 360;
const HEIGHT = 90;

interface Series {
  label: string;
  values: number[];
  className: string;
}

function Chart(props: { title: string; series: Series[]; format: (value: number) => string }) {
  const max = Math.max(0, ...props.series.flatMap((s) => s.values));
  const top = niceCeiling(max);
  const latest = props.series.map((s) => `${s.label} ${props.format(s.values[s.values.length - 1] ?? 0)}`);
  return (
    <figure class="chart">
      <figcaption>
        <strong>{props.title}</strong> <span class="muted">{latest.join(', ')}</span>
      </figcaption>
      <svg viewBox={`0 0 ${WIDTH} ${HEIGHT}`} role="img" aria-label={`${props.title}: ${latest.join(', ')}; scale up to ${props.format(top)}`}>
        <line x1="0" y1={HEIGHT} x2={WIDTH} y2={HEIGHT} class="axis" />
        <line x1="0" y1="0.5" x2={WIDTH} y2="0.5" class="grid-line" />
        {props.series.map((s) => (
          <polyline points={linePoints(s.values, WIDTH, HEIGHT, top)} class={`series ${s.className}`} />
        ))}
      </svg>
      <div class="chart-scale muted">
        <span>top {props.format(top)}</span>
        <span>last minute</span>
      </div>
    </figure>
  );
}

const perSecond = (value: number) => `${value < 10 ? value.toFixed(1) : Math.round(value)}/s`;
const bytesPerSecond = (value: number) => `${formatBytes(value)}/s`;
const latency = (seconds: number) =>
  seconds >= 1 ? `${seconds.toFixed(2)} s` : seconds >= 0.001 ? `${(seconds * 1000).toFixed(1)} ms` : `${Math.round(seconds * 1e6)} µs`;

/**
 * A volume's live IOPS, throughput and latency: the manager's `/v1/volumes/{name}/io`
 * stream (the engine's last-second figures), open only while this page shows an
 * attached volume.
 */
export function IoCharts(props: { volume: string; attached: boolean }) {
  const [history, setHistory] = useState<IoSample[]>([]);
  const [idle, setIdle] = useState<string | null>(null);
  useEffect(() => {
    setHistory([]);
    if (!props.attached) return;
    const stream = new EventSource(`/v1/volumes/${encodeURIComponent(props.volume)}/io`);
    stream.addEventListener('sample', (event) => {
      try {
        const sample = JSON.parse((event as MessageEvent<string>).data) as IoSample;
        setIdle(null);
        setHistory((h) => addSample(h, sample));
      } catch {
        // not a sample: skipped
      }
    });
    stream.addEventListener('idle', (event) => {
      try {
        setIdle(String(JSON.parse((event as MessageEvent<string>).data).message));
      } catch {
        setIdle('no engine');
      }
    });
    return () => stream.close();
  }, [props.volume, props.attached]);
  if (!props.attached) return <p>Charts show while the volume is attached.</p>;
  const read = history.map((s) => s.read);
  const write = history.map((s) => s.write);
  return (
    <>
      {idle && <p class="muted">{idle}</p>}
      <div class="charts">
        <Chart
          title="IOPS"
          format={perSecond}
          series={[
            { label: 'read', values: read.map((r) => r.iops), className: 'read' },
            { label: 'write', values: write.map((w) => w.iops), className: 'write' },
          ]}
        />
        <Chart
          title="Throughput"
          format={bytesPerSecond}
          series={[
            { label: 'read', values: read.map((r) => r.bytes_per_second), className: 'read' },
            { label: 'write', values: write.map((w) => w.bytes_per_second), className: 'write' },
          ]}
        />
        <Chart
          title="Latency (p99)"
          format={latency}
          series={[
            { label: 'read', values: read.map((r) => r.latency_p99_seconds), className: 'read' },
            { label: 'write', values: write.map((w) => w.latency_p99_seconds), className: 'write' },
          ]}
        />
      </div>
      <p class="muted legend">
        <span class="key read">read</span> <span class="key write">write</span> — the engine's figures of each
        last second.
      </p>
    </>
  );
}
