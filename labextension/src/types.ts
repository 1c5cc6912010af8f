/**
 * The pool status snapshot, schema `nbpool.status/1`.
 *
 * The kernel sends exactly what `Pool.status()` returns; the schema is
 * documented in `nbpool/status.py` and the README. Nothing here is computed
 * by the frontend except what `model.ts` derives for display.
 */

import { IOutput } from '@jupyterlab/nbformat';

export type WorkerState =
  | 'starting'
  | 'restarting'
  | 'idle'
  | 'leased'
  | 'busy'
  | 'failed'
  | 'dead'
  | 'stopping';

export interface IWorker {
  id: string;
  kernel: string;
  state: WorkerState;
  session: string | null;
  pid: number | null;
  executions: number;
  uptime: number;
  memory: number | null;
  attached: boolean;
  encrypted: boolean;
  /**
   * How its process began: forked from a warm template, or spawned.
   */
  started: 'fork' | 'spawn' | null;
  last_error: string | null;
  /** Why a starting worker is not running yet (a Slurm job's queue reason). */
  pending_reason?: string | null;
}

export interface ISession {
  name: string;
  worker: string | null;
  kernel: string;
  generation: number;
  queued: number;
  /**
   * Kept beyond the notebook kernel (`keep_sessions`): it survives a restart.
   */
  kept: boolean;
}

export interface IPoolEvent {
  time: number;
  kind: string;
  worker: string;
  message: string;
}

export interface IPoolStatus {
  schema: string;
  time: number;
  closed: boolean;
  kernel_name: string;
  size: number;
  min_size: number;
  max_size: number;
  keep_sessions: boolean;
  workers: IWorker[];
  sessions: ISession[];
  waiting: number;
  /**
   * The one-line summary (`PoolStatus.summary()`), e.g. `3/4 busy, 2 queued`.
   */
  summary: string;
  counters: { [name: string]: number };
  events: IPoolEvent[];
}

/**
 * The state of one job (a `%%pool_exec` cell run) in the `cells` push.
 */
export type JobState =
  | 'queued'
  | 'running'
  | 'done'
  | 'failed'
  | 'died'
  | 'interrupted'
  | 'cancelled';

/**
 * Job states after which a job changes no more and sends no more events.
 */
export const ENDED_STATES: ReadonlySet<string> = new Set([
  'done',
  'failed',
  'died',
  'interrupted',
  'cancelled'
]);

/**
 * One job of the notebook kernel (`{"kind": "cells"}`, protocol in
 * `nbpool/notebook/labcomm.py`): the last jobs, newest last.
 */
export interface IJob {
  /** Job number, per notebook kernel, from 1 (the `--bg` handle says "job 7"). */
  job: number;
  /** The `cellId` of the execute request that ran it; null when none was sent. */
  cell_id: string | null;
  /** The session id of the client that sent that request (`kernel.clientId`). */
  client: string;
  session: string;
  worker: string | null;
  background: boolean;
  state: JobState;
  /** Place in the session's queue while queued. */
  position: number | null;
  /** Epoch seconds: submitted, began running, ended. */
  started: number;
  began: number | null;
  ended: number | null;
  /** What happened, for failed and died jobs. */
  error: string | null;
  outputs: number;
  bytes: number;
  seq: number;
  /** A later run of the same cell exists. */
  superseded: boolean;
}

/**
 * One change to a followed job's output list (`{"kind": "job"}`).
 */
export type JobEvent =
  | { op: 'append'; output: IOutput }
  | { op: 'stream'; index: number; text: string }
  | { op: 'set'; index: number; output: IOutput }
  | { op: 'clear' }
  | { op: 'end'; state: JobState };

/**
 * The kernel's answer to "follow": the job's record so far.
 */
export interface IFollowReply {
  outputs: IOutput[];
  seq: number;
  /** The job's state (named so in the reply; never a top-level comm key). */
  state: JobState;
}

/**
 * An action request; the kernel answers with a one-line message or error.
 */
export type PoolAction =
  | { action: 'interrupt'; worker: string }
  | { action: 'restart'; worker: string }
  | { action: 'end_session'; session: string }
  | { action: 'resize'; size: string | number }
  | { action: 'detach' }
  | { action: 'stop' }
  | { action: 'refresh' }
  | { action: 'follow'; job: number }
  | { action: 'unfollow'; job: number }
  | { action: 'interrupt_job'; job: number };

/**
 * Colours of worker states: the same table as `STATE_COLOURS` in
 * `nbpool/status.py` (a unit test checks they agree).
 */
export const STATE_COLOURS: { [state: string]: string } = {
  starting: '#9e9e9e',
  restarting: '#ff9800',
  idle: '#4caf50',
  leased: '#2196f3',
  busy: '#3f51b5',
  failed: '#f44336',
  dead: '#b71c1c',
  stopping: '#757575'
};
