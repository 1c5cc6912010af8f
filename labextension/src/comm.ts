/**
 * The kernel I/O of the extension: one comm to the `nbpool.status` target of
 * one notebook's kernel (protocol in `nbpool/comm.py`).
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

import { IPoolStatus, PoolAction } from './types';

/**
 * The comm target name, shared with the kernel (`nbpool.comm.TARGET`).
 */
export const TARGET = 'nbpool.status';

/**
 * How long to wait for the comm's kernel subshell before using the main shell.
 */
const SUBSHELL_WAIT = 5000;

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
    const comm = this._comm;
    if (!comm || comm.isDisposed || !this._served) {
      return Promise.reject(
        new Error("this notebook's kernel does not serve an nbpool pool")
      );
    }
    const request = UUID.uuid4();
    return new Promise<string>((resolve, reject) => {
      this._pending.set(request, { resolve, reject });
      comm.send({ request, ...action });
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
    const data = msg.content.data as Private.IKernelMessage;
    if (data.kind === 'status') {
      this._served = true;
      this._status = data.status ?? null;
      this._receivedAt = Date.now();
      this._changed.emit();
    } else if (data.kind === 'reply' && typeof data.request === 'string') {
      const pending = this._pending.get(data.request);
      if (pending) {
        this._pending.delete(data.request);
        if (data.ok) {
          pending.resolve(data.message ?? 'done');
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
  private _receivedAt = 0;
  private _pending = new Map<string, Private.IPending>();
  private _changed = new Signal<this, void>(this);
  private _isDisposed = false;
}

namespace Private {
  export interface IPending {
    resolve: (message: string) => void;
    reject: (error: Error) => void;
  }

  export interface IKernelMessage {
    kind?: string;
    status?: IPoolStatus | null;
    request?: string;
    ok?: boolean;
    message?: string;
    error?: string;
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
