/**
 * The kernel I/O of the extension: one comm to the `nbpool.status` target of
 * one notebook's kernel (protocol in `nbpool/notebook/labcomm.py`): pool
 * snapshots, the kernel's jobs (`cells`), the live events of followed jobs,
 * and actions with their replies.
 *
 * A comm opened by the kernel would not survive a page reload, so this side
 * opens the comm, on every kernel connection: at start, after a restart,
 * after a reconnection, and when the kernel announces (a "hello" comm) that
 * it serves pool status now. A kernel without nbpool closes the comm at once;
 * the channel then stays quiet until one of those events.
 */

import { ISessionContext } from '@jupyterlab/apputils';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { UUID } from '@lumino/coreutils';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { IJob, IPoolStatus, JobEvent, PoolAction } from './types';

/**
 * The comm target name, shared with the kernel (`nbpool.comm.TARGET`).
 */
export const TARGET = 'nbpool.status';

/**
 * How long to wait for the comm's kernel subshell before using the main shell.
 */
const SUBSHELL_WAIT = 5000;

/**
 * How long `%load_ext nbpool` may take to answer on the comm (ms).
 */
const LOAD_WAIT = 30000;

/**
 * A live event of a followed job.
 */
export interface IJobEventArgs {
  job: number;
  seq: number;
  event: JobEvent;
}

/**
 * One notebook's channel to its kernel's pool.
 */
export class PoolChannel implements IDisposable {
  constructor(sessionContext: ISessionContext) {
    sessionContext.kernelChanged.connect(this._onKernelChanged, this);
    this._attach(sessionContext.session?.kernel ?? null);
  }

  /**
   * Emitted when the status or the connection changed.
   */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /**
   * The latest snapshot, or null (no kernel, no nbpool, or no pool yet).
   */
  get status(): IPoolStatus | null {
    return this._status;
  }

  /**
   * The kernel's last jobs, newest last (empty until the kernel sends them).
   */
  get jobs(): readonly IJob[] {
    return this._jobs;
  }

  /**
   * Emitted with the jobs the kernel lists first on each (re)opened comm:
   * the moment to reattach to background jobs this page did not run.
   */
  get opened(): ISignal<this, readonly IJob[]> {
    return this._opened;
  }

  /**
   * Live events of the jobs this page follows, in the kernel's seq order.
   */
  get jobEvent(): ISignal<this, IJobEventArgs> {
    return this._jobEvent;
  }

  /**
   * This page's client id on the kernel (`CELL.client` of jobs it ran).
   */
  get clientId(): string | null {
    return this._kernel?.clientId ?? null;
  }

  /**
   * When the latest snapshot arrived (`Date.now()`), to age its uptimes.
   */
  get receivedAt(): number {
    return this._receivedAt;
  }

  /**
   * Whether the kernel serves pool status on this channel.
   */
  get connected(): boolean {
    return this._comm !== null && this._served;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /**
   * Ask the kernel to act on its pool.
   *
   * @returns the kernel's one-line answer; rejects with its one-line error.
   */
  request(action: PoolAction): Promise<string> {
    return this.ask(action).then(reply => reply.message ?? 'done');
  }

  /**
   * Ask the kernel to act; its whole reply (e.g. a followed job's record).
   */
  ask(action: PoolAction): Promise<IKernelMessage> {
    const comm = this._comm;
    if (!comm || comm.isDisposed || !this._served) {
      return Promise.reject(
        new Error("this notebook's kernel does not serve an nbpool pool")
      );
    }
    const request = UUID.uuid4();
    return new Promise<IKernelMessage>((resolve, reject) => {
      this._pending.set(request, { resolve, reject });
      comm.send({ request, ...action });
    });
  }

  /**
   * Make sure the kernel serves nbpool: when it does not, run
   * `%load_ext nbpool` in it (silently) and wait until it answers on the comm.
   *
   * @returns rejects with a one-line reason (no kernel, the import failed,
   * no answer in time).
   */
  async ensureServed(): Promise<void> {
    if (this.connected) {
      return;
    }
    const kernel = this._kernel;
    if (!kernel || kernel.isDisposed) {
      throw new Error('the notebook has no kernel');
    }
    const reply = await kernel.requestExecute({
      code: '%load_ext nbpool',
      silent: true,
      store_history: false
    }).done;
    if (reply.content.status !== 'ok') {
      const content = reply.content as { ename?: string; evalue?: string };
      throw new Error(
        `%load_ext nbpool failed in the kernel: ${content.ename ?? 'error'}: ${content.evalue ?? ''}`.trim()
      );
    }
    // The kernel's hello makes the channel open its comm; do not wait for it.
    this._onHello();
    await new Promise<void>((resolve, reject) => {
      const check = () => {
        if (this.connected) {
          window.clearTimeout(timer);
          this._changed.disconnect(check);
          resolve();
        }
      };
      const timer = window.setTimeout(() => {
        this._changed.disconnect(check);
        reject(
          new Error(
            `the kernel did not open the nbpool channel within ${LOAD_WAIT / 1000} s of %load_ext nbpool`
          )
        );
      }, LOAD_WAIT);
      this._changed.connect(check);
      check();
    });
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._detach();
    Signal.clearData(this);
  }

  private _onKernelChanged(
    _: ISessionContext,
    args: { newValue: Kernel.IKernelConnection | null }
  ): void {
    this._attach(args.newValue);
  }

  private _attach(kernel: Kernel.IKernelConnection | null): void {
    this._detach();
    this._kernel = kernel;
    if (!kernel || !kernel.handleComms) {
      this._changed.emit();
      return;
    }
    kernel.registerCommTarget(TARGET, this._onHello);
    kernel.statusChanged.connect(this._onStatus, this);
    kernel.connectionStatusChanged.connect(this._onConnection, this);
    this._wanted = true;
    void this._open();
    this._changed.emit();
  }

  private _detach(): void {
    const kernel = this._kernel;
    if (kernel && !kernel.isDisposed) {
      kernel.removeCommTarget(TARGET, this._onHello);
      kernel.statusChanged.disconnect(this._onStatus, this);
      kernel.connectionStatusChanged.disconnect(this._onConnection, this);
      if (this._comm && !this._comm.isDisposed) {
        this._comm.onClose = () => undefined;
        this._comm.close();
      }
    }
    this._kernel = null;
    this._drop('the notebook left its kernel');
  }

  /**
   * Forget the comm (closed, or cleared by a restart) and the status.
   */
  private _drop(reason: string): void {
    this._comm = null;
    this._served = false;
    this._status = null;
    this._jobs = [];
    this._listed = false;
    for (const pending of this._pending.values()) {
      pending.reject(new Error(reason));
    }
    this._pending.clear();
  }

  private async _open(): Promise<void> {
    const kernel = this._kernel;
    if (!kernel || kernel.isDisposed || this._comm || !this._wanted) {
      return;
    }
    if (!Private.isRunning(kernel)) {
      return; // _onStatus opens it once the kernel runs
    }
    this._wanted = false;
    let comm: Kernel.IComm;
    try {
      comm = kernel.createComm(TARGET);
    } catch {
      return; // the connection went away meanwhile
    }
    comm.onMsg = msg => this._onMsg(comm, msg);
    comm.onClose = () => this._onClose(comm);
    this._comm = comm;
    await Private.subshellReady(kernel, comm);
    if (this._comm !== comm || comm.isDisposed || kernel.isDisposed) {
      return;
    }
    try {
      comm.open({ version: 1 });
    } catch {
      this._onClose(comm);
    }
  }

  private _onMsg(comm: Kernel.IComm, msg: KernelMessage.ICommMsgMsg): void {
    if (comm !== this._comm) {
      return;
    }
    const data = msg.content.data as IKernelMessage;
    if (data.kind === 'status') {
      this._served = true;
      this._status = data.status ?? null;
      this._receivedAt = Date.now();
      this._changed.emit();
    } else if (data.kind === 'cells' && Array.isArray(data.cells)) {
      this._served = true;
      this._jobs = data.cells;
      this._receivedAt = Date.now();
      this._changed.emit();
      if (!this._listed) {
        this._listed = true;
        this._opened.emit(this._jobs);
      }
    } else if (
      data.kind === 'job' &&
      typeof data.job === 'number' &&
      typeof data.seq === 'number' &&
      data.event
    ) {
      this._jobEvent.emit({ job: data.job, seq: data.seq, event: data.event });
    } else if (data.kind === 'reply' && typeof data.request === 'string') {
      const pending = this._pending.get(data.request);
      if (pending) {
        this._pending.delete(data.request);
        if (data.ok) {
          pending.resolve(data);
        } else {
          pending.reject(new Error(data.error ?? 'the kernel refused'));
        }
      }
    }
  }

  private _onClose(comm: Kernel.IComm): void {
    if (comm !== this._comm) {
      return;
    }
    // Closed by the kernel: no nbpool there (or it was unloaded). Open again
    // only on a hello, a restart or a reconnection.
    this._drop("the kernel closed the pool channel (nbpool not loaded)");
    this._changed.emit();
  }

  private _onHello = (): void => {
    if (!this._comm) {
      this._wanted = true;
      void this._open();
    }
  };

  private _onStatus(kernel: Kernel.IKernelConnection): void {
    const status = kernel.status;
    if (
      status === 'restarting' ||
      status === 'autorestarting' ||
      status === 'dead'
    ) {
      // A restart clears the kernel's comms without calling onClose.
      if (this._comm || this._status) {
        this._drop('the kernel restarted');
        this._changed.emit();
      }
      this._wanted = status !== 'dead';
    } else if (Private.isRunning(kernel) && !this._comm && this._wanted) {
      void this._open();
    }
  }

  private _onConnection(kernel: Kernel.IKernelConnection): void {
    if (kernel.connectionStatus !== 'connected') {
      return;
    }
    if (this._comm && !this._comm.isDisposed && this._served) {
      // Pushes sent while the socket was down are lost: ask for a fresh one.
      this.request({ action: 'refresh' }).catch(() => undefined);
    } else if (!this._comm) {
      this._wanted = true;
      void this._open();
    }
  }

  private _kernel: Kernel.IKernelConnection | null = null;
  private _comm: Kernel.IComm | null = null;
  private _served = false;
  private _wanted = false;
  private _status: IPoolStatus | null = null;
  private _jobs: IJob[] = [];
  /** Whether this comm's first job list was announced by `opened`. */
  private _listed = false;
  private _receivedAt = 0;
  private _pending = new Map<string, Private.IPending>();
  private _changed = new Signal<this, void>(this);
  private _opened = new Signal<this, readonly IJob[]>(this);
  private _jobEvent = new Signal<this, IJobEventArgs>(this);
  private _isDisposed = false;
}

/**
 * A comm message from the kernel (which keys are set depends on `kind`).
 */
export interface IKernelMessage {
  kind?: string;
  status?: IPoolStatus | null;
  cells?: IJob[];
  job?: number;
  seq?: number;
  event?: JobEvent;
  request?: string;
  ok?: boolean;
  message?: string;
  error?: string;
  [key: string]: unknown;
}

namespace Private {
  export interface IPending {
    resolve: (reply: IKernelMessage) => void;
    reject: (error: Error) => void;
  }

  /**
   * Whether the kernel runs and takes messages (not starting or restarting).
   */
  export function isRunning(kernel: Kernel.IKernelConnection): boolean {
    return (
      kernel.connectionStatus === 'connected' &&
      (kernel.status === 'idle' || kernel.status === 'busy')
    );
  }

  /**
   * Wait until the comm's own kernel subshell exists, if the kernel has
   * subshells and comms use them (JupyterLab >= 4.4, ipykernel 7): the
   * comm's messages then never queue behind a running cell.
   */
  export async function subshellReady(
    kernel: Kernel.IKernelConnection,
    comm: Kernel.IComm
  ): Promise<void> {
    const started = (comm as { subshellStarted?: Promise<void> })
      .subshellStarted;
    if (!started || comm.commsOverSubshells === 'disabled') {
      return;
    }
    try {
      await kernel.info;
    } catch {
      return;
    }
    if (!(kernel as { supportsSubshells?: boolean }).supportsSubshells) {
      return;
    }
    let timer = 0;
    const timeout = new Promise<void>(resolve => {
      timer = window.setTimeout(resolve, SUBSHELL_WAIT);
    });
    try {
      await Promise.race([started, timeout]);
    } catch {
      // no subshell: the main shell serves the comm
    } finally {
      window.clearTimeout(timer);
    }
  }
}
