/**
 * The state the views show: the pool of the current notebook, and the
 * extension's settings.
 *
 * One `PoolChannel` per open notebook (so switching notebooks shows the other
 * pool at once); the model follows the notebook tracker's current widget and
 * re-emits that channel's changes. Per-notebook views (badges, the notebook
 * toolbar summary, reattach) get that notebook's channel from `tracked` and
 * `channelFor`.
 */

import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { PoolChannel } from './comm';
import { IJob, IPoolStatus, IWorker, PoolAction } from './types';

/**
 * The user's settings (`schema/plugin.json`).
 */
export interface ISettings {
  /** Show a session badge on every `%%pool_exec` cell. */
  showBadges: boolean;
  /** Notify when a background job that ran at least this long ends (s); < 0: never. */
  notifyAfter: number;
  /** How often views age their clocks between pushes (s). */
  refreshInterval: number;
}

export const DEFAULT_SETTINGS: ISettings = {
  showBadges: true,
  notifyAfter: 10,
  refreshInterval: 1
};

/**
 * The settings as the views read them, with a signal when they change.
 */
export class PoolSettings {
  get current(): ISettings {
    return this._current;
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /**
   * Take the registry's composite values (unknown or mistyped keys keep
   * their defaults).
   */
  update(values: Partial<Record<keyof ISettings, unknown>>): void {
    const next = { ...DEFAULT_SETTINGS };
    if (typeof values.showBadges === 'boolean') {
      next.showBadges = values.showBadges;
    }
    if (typeof values.notifyAfter === 'number') {
      next.notifyAfter = values.notifyAfter;
    }
    if (typeof values.refreshInterval === 'number' && values.refreshInterval > 0) {
      next.refreshInterval = values.refreshInterval;
    }
    this._current = next;
    this._changed.emit();
  }

  private _current: ISettings = { ...DEFAULT_SETTINGS };
  private _changed = new Signal<this, void>(this);
}

/**
 * The newest job that ran the cell `cellId`, or undefined.
 */
export function jobOfCell(
  jobs: readonly IJob[],
  cellId: string
): IJob | undefined {
  for (let i = jobs.length - 1; i >= 0; i--) {
    if (jobs[i].cell_id === cellId) {
      return jobs[i];
    }
  }
  return undefined;
}

/**
 * What the status bar shows for a snapshot.
 */
export interface ISummary {
  /**
   * e.g. `nbpool 3/4 busy · 2 queued` (never the word "Idle").
   */
  text: string;
  /**
   * Workers failing, dead or restarting: show the warning style.
   */
  warn: boolean;
}

/**
 * Workers that count as the pool's size (not stopping, not dead).
 */
export function liveWorkers(status: IPoolStatus): IWorker[] {
  return status.workers.filter(
    w => w.state !== 'stopping' && w.state !== 'dead'
  );
}

/**
 * The status-bar form of the snapshot's one-line summary (the kernel writes
 * it, `PoolStatus.summary()`); null when there is nothing to show (no pool,
 * or a closed one).
 */
export function summarize(status: IPoolStatus | null): ISummary | null {
  if (!status || status.closed) {
    return null;
  }
  const warn = status.workers.some(
    w => w.state === 'failed' || w.state === 'dead' || w.state === 'restarting'
  );
  return { text: `nbpool ${status.summary.replace(/, /g, ' · ')}`, warn };
}

/**
 * The pool of the current notebook.
 */
export class PoolModel implements IDisposable {
  constructor(tracker: INotebookTracker) {
    this._tracker = tracker;
    tracker.forEach(panel => this._track(panel));
    tracker.widgetAdded.connect((_, panel) => this._track(panel), this);
    tracker.currentChanged.connect(this._onCurrentChanged, this);
    this._onCurrentChanged();
  }

  /**
   * Emitted when the current notebook or its pool changed.
   */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /**
   * The current notebook, if any.
   */
  get notebook(): NotebookPanel | null {
    return this._current;
  }

  /**
   * The current notebook's pool snapshot, or null.
   */
  get status(): IPoolStatus | null {
    return this._channel()?.status ?? null;
  }

  /**
   * The current notebook's jobs (the kernel's last jobs, newest last).
   */
  get jobs(): readonly IJob[] {
    return this._channel()?.jobs ?? [];
  }

  /**
   * Emitted once for every notebook the model starts following, with its
   * channel (also for those open when the model was made: see `forEach`).
   */
  get tracked(): ISignal<this, { panel: NotebookPanel; channel: PoolChannel }> {
    return this._tracked;
  }

  /**
   * The channel of a notebook; the model follows the notebook from now on
   * (the notebook's toolbar asks before the tracker has it).
   */
  channelFor(panel: NotebookPanel): PoolChannel {
    this._track(panel);
    return this._channels.get(panel)!;
  }

  /**
   * Call `fn` for each notebook followed now, with its channel.
   */
  forEach(fn: (panel: NotebookPanel, channel: PoolChannel) => void): void {
    this._channels.forEach((channel, panel) => fn(panel, channel));
  }

  /**
   * When the snapshot arrived (`Date.now()`).
   */
  get receivedAt(): number {
    return this._channel()?.receivedAt ?? 0;
  }

  /**
   * Whether the current notebook's kernel serves pool status (nbpool loaded).
   */
  get connected(): boolean {
    return this._channel()?.connected ?? false;
  }

  /**
   * The status bar summary, or null to hide the item.
   */
  get summary(): ISummary | null {
    return summarize(this.status);
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /**
   * Run an action on the current notebook's pool.
   */
  request(action: PoolAction): Promise<string> {
    const channel = this._channel();
    if (!channel) {
      return Promise.reject(new Error('no notebook is open'));
    }
    return channel.request(action);
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    for (const channel of this._channels.values()) {
      channel.dispose();
    }
    this._channels.clear();
    Signal.clearData(this);
  }

  private _channel(): PoolChannel | null {
    return this._current ? this._channels.get(this._current) ?? null : null;
  }

  private _track(panel: NotebookPanel): void {
    if (this._channels.has(panel) || panel.isDisposed) {
      return;
    }
    const channel = new PoolChannel(panel.sessionContext);
    this._channels.set(panel, channel);
    this._tracked.emit({ panel, channel });
    channel.changed.connect(() => {
      if (panel === this._current) {
        this._changed.emit();
      }
    }, this);
    panel.disposed.connect(() => {
      this._channels.delete(panel);
      channel.dispose();
      if (panel === this._current) {
        this._current = null;
        this._changed.emit();
      }
    }, this);
  }

  private _onCurrentChanged(): void {
    const panel = this._tracker.currentWidget;
    if (panel) {
      this._track(panel);
    }
    this._current = panel;
    this._changed.emit();
  }

  private _tracker: INotebookTracker;
  private _channels = new Map<NotebookPanel, PoolChannel>();
  private _current: NotebookPanel | null = null;
  private _changed = new Signal<this, void>(this);
  private _tracked = new Signal<
    this,
    { panel: NotebookPanel; channel: PoolChannel }
  >(this);
  private _isDisposed = false;
}
