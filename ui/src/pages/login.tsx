import { useState } from 'preact/hooks';
import { ApiError, login } from '../api/client';

/** Trades the API token for a session cookie; the token is not kept anywhere. */
export function LoginPage(props: { onLoggedIn: () => void }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  return (
    <main class="login" id="main">
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(null);
          try {
            await login(token);
            setToken('');
            props.onLoggedIn();
          } catch (e) {
            setError(e instanceof ApiError ? e.message : String(e));
          } finally {
            setBusy(false);
          }
        }}
      >
        <h1>Shorthorn</h1>
        <p>
          Log in with the API token: the <code>token</code> file in the data directory, which{' '}
          <code>shorthorn up</code> prints on its first start.
        </p>
        <label>
          API token
          <input
            type="password"
            name="token"
            autocomplete="current-password"
            value={token}
            onInput={(e) => setToken(e.currentTarget.value)}
            required
          />
        </label>
        {error && (
          <p class="form-error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" class="primary" disabled={busy || token === ''}>
          Log in
        </button>
      </form>
    </main>
  );
}
