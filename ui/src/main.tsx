// Shorthorn's web UI: a login gate, then the pages over the live watch stream.

import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { logout, resumeSession, whenLoggedOut } from './api/client';
import { Notices, notify } from './components';
import { connect, connected, disconnect, useCluster } from './live';
import { BackupsPage } from './pages/backups';
import { Dashboard } from './pages/dashboard';
import { EventsPage } from './pages/events';
import { JobsPage } from './pages/jobs';
import { LoginPage } from './pages/login';
import { NodesPage } from './pages/nodes';
import { SettingsPage } from './pages/settings';
import { VolumePage } from './pages/volume';
import { VolumesPage } from './pages/volumes';
import { href, useRoute } from './router';
import './style.css';

const PAGES: [string, string][] = [
  ['dashboard', 'Dashboard'],
  ['volumes', 'Volumes'],
  ['nodes', 'Nodes'],
  ['backups', 'Backups'],
  ['jobs', 'Recurring jobs'],
  ['settings', 'Settings'],
  ['events', 'Events'],
];

type Phase = 'checking' | 'login' | 'in';

function App() {
  const [phase, setPhase] = useState<Phase>('checking');
  const loggedOut = () => {
    disconnect();
    setPhase('login');
  };
  useEffect(() => {
    whenLoggedOut(loggedOut);
    resumeSession()
      .then((ok) => {
        if (ok) {
          connect(loggedOut);
          setPhase('in');
        } else {
          setPhase('login');
        }
      })
      .catch((e) => {
        notify(String(e), true);
        setPhase('login');
      });
  }, []);
  if (phase === 'checking') return <p class="loading">Loading…</p>;
  if (phase === 'login') {
    return (
      <>
        <LoginPage
          onLoggedIn={() => {
            connect(loggedOut);
            setPhase('in');
          }}
        />
        <Notices />
      </>
    );
  }
  return <Shell onLogout={loggedOut} />;
}

function Shell(props: { onLogout: () => void }) {
  const route = useRoute();
  const state = useCluster();
  const page = PAGES.some(([name]) => name === route.page) ? route.page : 'dashboard';
  return (
    <div class="shell">
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <span class="brand">Shorthorn</span>
        <nav aria-label="Pages">
          {PAGES.map(([name, title]) => (
            <a href={href(name)} aria-current={page === name ? 'page' : undefined}>
              {title}
            </a>
          ))}
        </nav>
        <span class={connected ? 'live on' : 'live off'}>{connected ? 'live' : 'reconnecting…'}</span>
        <button
          type="button"
          onClick={async () => {
            try {
              await logout();
            } finally {
              props.onLogout();
            }
          }}
        >
          Log out
        </button>
      </header>
      <main id="main">
        {!state.synced ? (
          <p class="loading">Loading the cluster…</p>
        ) : page === 'volumes' && route.param !== null ? (
          <VolumePage name={route.param} />
        ) : (
          <Page page={page} />
        )}
      </main>
      <Notices />
    </div>
  );
}

function Page(props: { page: string }) {
  switch (props.page) {
    case 'volumes':
      return <VolumesPage />;
    case 'nodes':
      return <NodesPage />;
    case 'backups':
      return <BackupsPage />;
    case 'jobs':
      return <JobsPage />;
    case 'settings':
      return <SettingsPage />;
    case 'events':
      return <EventsPage />;
    default:
      return <Dashboard />;
  }
}

const root = document.getElementById('app');
if (root) render(<App />, root);
