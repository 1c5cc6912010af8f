/**
 * The views on the notebook's cells: a badge on every `%%pool_exec` cell
 * with its session and live state (and an interrupt action while it runs),
 * and a notification when a long background cell ends.
 *
 * Both read one notebook's channel (`comm.ts`): the kernel's `cells` pushes,
 * matched to cells by cell id. A cell whose binding line has no job yet
 * shows the session parsed from that line.
 */

import { Notification } from '@jupyterlab/apputils';
import { Cell } from '@jupyterlab/cells';
import { NotebookPanel } from '@jupyterlab/notebook';
import { TranslationBundle } from '@jupyterlab/translation';
import { ReactWidget } from '@jupyterlab/ui-components';
import { IDisposable } from '@lumino/disposable';
import { Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';
import * as React from 'react';

import { IBinding, parseBinding } from './binding';
import { PoolChannel } from './comm';
import { jobOfCell, PoolSettings } from './model';
import { ENDED_STATES, IJob } from './types';

/**
 * Scroll the notebook to the cell `cellId` and make it the active cell.
 *
 * @returns whether the cell is in the notebook.
 */
export function showCell(panel: NotebookPanel, cellId: string): boolean {
  const notebook = panel.content;
  const index = notebook.widgets.findIndex(c => c.model.id === cellId);
  if (index < 0) {
    return false;
  }
  notebook.activeCellIndex = index;
  void notebook.scrollToCell(notebook.widgets[index], 'center');
  return true;
}

/**
 * A duration as `12.3 s`, `4:05` or `1:02:03`.
 */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, seconds);
  if (s < 60) {
    return `${s.toFixed(1)} s`;
  }
  const whole = Math.floor(s);
  const h = Math.floor(whole / 3600);
  const m = Math.floor((whole % 3600) / 60);
  const sec = String(whole % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

/**
 * What a job's state reads like on its badge and in the panel.
 */
export function stateText(
  job: IJob | undefined,
  trans: TranslationBundle,
  now = Date.now() / 1000
): string {
  if (!job) {
    return trans.__('not run yet');
  }
  switch (job.state) {
    case 'queued':
      return job.position
        ? trans.__('queued #%1', job.position)
        : trans.__('queued');
    case 'running':
      return trans.__(
        'running %1',
        formatDuration(now - (job.began ?? job.started))
      );
    case 'done':
      return trans.__(
        'done in %1',
        formatDuration((job.ended ?? now) - (job.began ?? job.started))
      );
    case 'failed':
      return trans.__('failed');
    case 'died':
      return trans.__('worker died');
    case 'interrupted':
      return trans.__('interrupted');
    case 'cancelled':
      return trans.__('cancelled');
  }
}

/**
 * The badge on one cell.
 */
class CellBadge extends ReactWidget {
  constructor(trans: TranslationBundle, onInterrupt: (job: IJob) => void) {
    super();
    this._trans = trans;
    this._onInterrupt = onInterrupt;
    this.addClass('jp-nbpool-badge');
  }

  /**
   * Show this binding and job; re-renders only when something shown changed.
   */
  setJob(binding: IBinding, job: IJob | undefined): void {
    const trans = this._trans;
    const text = stateText(job, trans);
    const key = JSON.stringify([binding, job, text]);
    if (key === this._key) {
      return;
    }
    this._key = key;
    this._binding = binding;
    this._job = job;
    this._text = text;
    this.node.dataset.state = job?.state ?? 'unknown';
    this.node.dataset.session = job?.session ?? binding.session ?? '';
    this.update();
  }

  protected render(): JSX.Element {
    const trans = this._trans;
    const job = this._job;
    const session =
      job?.session ?? this._binding?.session ?? trans.__('default session');
    const live = job && (job.state === 'running' || job.state === 'queued');
    const title = job?.error
      ? job.error
      : job
        ? trans.__('job %1 on session %2', job.job, session)
        : trans.__('bound to session %1; not run in this kernel yet', session);
    return (
      <>
        <span className="jp-nbpool-badge-session" title={title}>
          {session}
        </span>
        {job?.worker && (
          <span className="jp-nbpool-badge-worker">{job.worker}</span>
        )}
        {(job?.background ?? this._binding?.background) && (
          <span className="jp-nbpool-badge-bg">{trans.__('background')}</span>
        )}
        <span className="jp-nbpool-badge-state" title={title}>
          {this._text}
        </span>
        {live && (
          <button
            className="jp-nbpool-badge-interrupt jp-nbpool-button"
            title={
              job.state === 'running'
                ? trans.__("Interrupt this cell on its worker (only that worker)")
                : trans.__('Withdraw this cell from its queue')
            }
            onClick={() => this._onInterrupt(job)}
          >
            {job.state === 'running'
              ? trans.__('Interrupt')
              : trans.__('Withdraw')}
          </button>
        )}
      </>
    );
  }

  private _trans: TranslationBundle;
  private _onInterrupt: (job: IJob) => void;
  private _binding: IBinding | null = null;
  private _job: IJob | undefined = undefined;
  private _text = '';
  private _key = '';
}

/**
 * The badges of one notebook: kept in step with the cells' first lines, the
 * jobs, the settings, and the cells being rendered (windowed notebooks
 * render a cell when it comes into view; the badge is attached then).
 */
export class CellBadges implements IDisposable {
  constructor(
    panel: NotebookPanel,
    channel: PoolChannel,
    settings: PoolSettings,
    trans: TranslationBundle
  ) {
    this._panel = panel;
    this._channel = channel;
    this._settings = settings;
    this._trans = trans;
    channel.changed.connect(this._schedule, this);
    settings.changed.connect(this._onSettings, this);
    panel.content.modelChanged.connect(this._onModel, this);
    this._onModel();
    this._onSettings();
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    window.clearInterval(this._timer);
    for (const badge of this._badges.values()) {
      badge.dispose();
    }
    this._badges.clear();
    Signal.disconnectReceiver(this);
  }

  private _onModel(): void {
    this._panel.content.model?.cells.changed.connect(this._schedule, this);
    this._schedule();
  }

  private _onSettings(): void {
    window.clearInterval(this._timer);
    // Between pushes only the clocks of running cells move.
    this._timer = window.setInterval(
      () => this._sync(),
      this._settings.current.refreshInterval * 1000
    );
    this._schedule();
  }

  private _schedule(): void {
    if (!this._frame) {
      this._frame = window.requestAnimationFrame(() => {
        this._frame = 0;
        this._sync();
      });
    }
  }

  private _sync(): void {
    if (this._isDisposed) {
      return;
    }
    const show = this._settings.current.showBadges;
    const jobs = this._channel.jobs;
    const seen = new Set<Cell>();
    for (const cell of this._panel.content.widgets) {
      seen.add(cell);
      this._watch(cell);
      const binding =
        show && cell.model.type === 'code'
          ? parseBinding(cell.model.sharedModel.getSource())
          : null;
      let badge = this._badges.get(cell);
      if (!binding) {
        if (badge) {
          badge.dispose();
          this._badges.delete(cell);
        }
        continue;
      }
      if (badge && badge.node.parentElement !== cell.node) {
        badge.dispose(); // something re-rendered the cell's node
        badge = undefined;
      }
      if (!badge) {
        if (!cell.node.isConnected) {
          continue; // not rendered yet: attached when it comes into view
        }
        badge = new CellBadge(this._trans, job => this._interrupt(job));
        const input = cell.node.querySelector<HTMLElement>(
          ':scope > .jp-Cell-inputWrapper'
        );
        Widget.attach(badge, cell.node, input);
        this._badges.set(cell, badge);
      }
      badge.setJob(binding, jobOfCell(jobs, cell.model.id));
    }
    for (const [cell, badge] of this._badges) {
      if (!seen.has(cell)) {
        badge.dispose();
        this._badges.delete(cell);
      }
    }
  }

  /**
   * Follow a cell's source edits and its coming into view, once.
   */
  private _watch(cell: Cell): void {
    if (this._watched.has(cell)) {
      return;
    }
    this._watched.add(cell);
    cell.model.contentChanged.connect(this._schedule, this);
    cell.inViewportChanged.connect(this._schedule, this);
  }

  private _interrupt(job: IJob): void {
    this._channel
      .request({ action: 'interrupt_job', job: job.job })
      .catch((error: Error) =>
        Notification.error(
          this._trans.__('nbpool: could not interrupt job %1: %2', job.job, error.message),
          { autoClose: 8000 }
        )
      );
  }

  private _panel: NotebookPanel;
  private _channel: PoolChannel;
  private _settings: PoolSettings;
  private _trans: TranslationBundle;
  private _badges = new Map<Cell, CellBadge>();
  private _watched = new WeakSet<Cell>();
  private _timer = 0;
  private _frame = 0;
  private _isDisposed = false;
}

/**
 * Notifies when a background job of this notebook that ran longer than the
 * `notifyAfter` setting ends (only ends seen happening, not jobs that had
 * ended before this page listed them).
 */
export class JobNotifier implements IDisposable {
  constructor(
    panel: NotebookPanel,
    channel: PoolChannel,
    settings: PoolSettings,
    trans: TranslationBundle
  ) {
    this._panel = panel;
    this._channel = channel;
    this._settings = settings;
    this._trans = trans;
    channel.changed.connect(this._onChanged, this);
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    Signal.disconnectReceiver(this);
  }

  private _onChanged(): void {
    const threshold = this._settings.current.notifyAfter;
    const me = this._channel.clientId;
    const cells = new Set(this._panel.content.widgets.map(c => c.model.id));
    for (const job of this._channel.jobs) {
      const before = this._states.get(job.job);
      this._states.set(job.job, job.state);
      if (
        before === undefined ||
        ENDED_STATES.has(before) ||
        !ENDED_STATES.has(job.state) ||
        !job.background ||
        threshold < 0 ||
        !(job.client === me || (job.cell_id !== null && cells.has(job.cell_id)))
      ) {
        continue;
      }
      const ran = (job.ended ?? 0) - (job.began ?? job.started);
      if (ran >= threshold) {
        this._notify(job);
      }
    }
  }

  private _notify(job: IJob): void {
    const trans = this._trans;
    const text = trans.__(
      'nbpool: background cell on %1 %2 (%3)',
      job.session,
      stateText(job, trans),
      this._panel.title.label
    );
    const cellId = job.cell_id;
    const actions =
      cellId === null
        ? []
        : [
            {
              label: trans.__('Show cell'),
              callback: () => {
                showCell(this._panel, cellId);
              }
            }
          ];
    const options = { autoClose: 10000, actions };
    if (job.state === 'done') {
      Notification.success(text, options);
    } else {
      Notification.warning(job.error ? `${text}: ${job.error}` : text, options);
    }
  }

  private _panel: NotebookPanel;
  private _channel: PoolChannel;
  private _settings: PoolSettings;
  private _trans: TranslationBundle;
  private _states = new Map<number, string>();
  private _isDisposed = false;
}
