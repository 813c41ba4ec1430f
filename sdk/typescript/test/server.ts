/**
 * A real `errand serve` for the tests: a fresh data directory, a port of its own, stopped (or killed)
 * by the test. The binary is `$ERRAND_BIN`, else the newer of target/debug/errand and
 * target/release/errand at the top of the repository.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');

/** The release build, for measuring: `$ERRAND_BIN`, else target/release/errand, else any build. */
export function releaseBin(): string {
  if (process.env.ERRAND_BIN) return process.env.ERRAND_BIN;
  const release = join(root, 'target', 'release', 'errand');
  if (existsSync(release)) return release;
  console.error('note: no target/release/errand (cargo build --release); measuring a debug build');
  return errandBin();
}

export function errandBin(): string {
  if (process.env.ERRAND_BIN) return process.env.ERRAND_BIN;
  const found = ['debug', 'release']
    .map((p) => join(root, 'target', p, 'errand'))
    .filter((p) => existsSync(p))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  if (!found[0]) throw new Error('no errand binary: run `cargo build --bin errand` at the top of the repository, or set ERRAND_BIN');
  return found[0];
}

export interface Server {
  url: string;
  dataDir: string;
  child: ChildProcess;
  /** SIGTERM, and wait for the exit. */
  stop(): Promise<void>;
  /** Starts the server again on the same data directory and port. */
  restart(): Promise<void>;
}

export async function startServer(args: string[] = [], env: Record<string, string> = {}, bin = errandBin()): Promise<Server> {
  const dataDir = mkdtempSync(join(tmpdir(), 'errand-ts-'));
  let listen = '127.0.0.1:0';
  const server: Server = {
    url: '',
    dataDir,
    child: undefined as unknown as ChildProcess,
    async stop() {
      await stopChild(server.child);
    },
    async restart() {
      await stopChild(server.child);
      await launch();
    },
  };
  const launch = async () => {
    const child = spawn(bin, ['serve', '--listen', listen, '--data-dir', dataDir, '--log-format', 'json', '--log', 'warn,errand_server::run=info', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    server.child = child;
    server.url = await new Promise<string>((resolve, reject) => {
      let seen = '';
      const onData = (d: Buffer) => {
        seen += d.toString();
        const m = /listening on (http:\/\/[0-9.:]+)/.exec(seen);
        if (m?.[1]) {
          resolve(m[1]);
          if (process.env.ERRAND_TEST_LOG) child.stdout?.pipe(process.stderr);
        }
      };
      child.stdout?.on('data', onData);
      child.stderr?.on('data', onData);
      child.once('exit', (code) => reject(new Error(`errand serve exited with ${code}: ${seen.slice(-2000)}`)));
      setTimeout(() => reject(new Error(`errand serve did not start: ${seen.slice(-2000)}`)), 30_000).unref();
    });
    listen = server.url.replace('http://', '');
  };
  await launch();
  process.once('exit', () => {
    server.child.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  });
  return server;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  await exited;
}
