/**
 * The side panel: workers, sessions, jobs, queue and events of the current
 * notebook's pool, with its actions (interrupt, restart, end session, resize)
 * and a link from each job to its cell.
 *
 * A `ReactWidget`: everything shown comes from the kernel's snapshots (React
 * keeps the buttons the same elements across the frequent re-renders, so a
 * click is never lost); actions go to the kernel, which answers with a
 * one-line message or error shown at the top.
 */

import { TranslationBundle } from '@jupyterlab/translation';
import { LabIcon, ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { formatDuration, showCell, stateText } from './cells';
import { liveWorkers, PoolModel, PoolSettings } from './model';
import { IJob, IPoolStatus, IWorker, PoolAction, STATE_COLOURS } from './types';

const POOL_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <rect x="2" y="3" width="9" height="7" rx="1.5"/><rect x="13" y="3" width="9" height="7" rx="1.5"/>
    <rect x="2" y="14" width="9" height="7" rx="1.5"/><rect x="13" y="14" width="9" height="7" rx="1.5" opacity="0.5"/>
  </g>
</svg>`;

export const poolIcon = new LabIcon({ name: 'nbpool:pool', svgstr: POOL_SVG });

export class PoolPanel extends ReactWidget {
  constructor(
    model: PoolModel,
    settings: PoolSettings,
    trans: TranslationBundle
  ) {
    super();
    this._model = model;
    this._settings = settings;
    this._trans = trans;
    this.id = 'nbpool-panel';
    this.title.icon = poolIcon;
    // Notebook 7 lists it as "Show <caption>" in View > Right Sidebar.
    this.title.caption = trans.__('nbpool pool');
    this.addClass('jp-nbpool-panel');
    model.changed.connect(this._onModelChanged, this);
    settings.changed.connect(this._restartClock, this);
  }

  protected onAfterShow(): void {
    this.update();
    this._restartClock();
  }

  protected onAfterHide(): void {
    window.clearInterval(this._timer);
    this._timer = 0;
  }

  dispose(): void {
    window.clearInterval(this._timer);
    super.dispose();
  }

  protected render(): JSX.Element {
    const trans = this._trans;
    const model = this._model;
    const notebook = model.notebook;
    const status = model.status;
    const empty = emptyText(trans, notebook !== null, model.connected, status);
    const message = this._message;
    return (
      <>
        <div className="jp-nbpool-head">
          <h2>nbpool</h2>
          <div className="jp-nbpool-notebook">{notebook?.title.label ?? ''}</div>
        </div>
        <div
          className={
            'jp-nbpool-message' + (message?.error ? ' jp-nbpool-error' : '')
          }
          role={message?.error ? 'alert' : 'status'}
          hidden={!message}
        >
          {message && (
            <>
              <span className="jp-nbpool-message-text">{message.text}</span>
              <button
                className="jp-nbpool-dismiss"
                title={trans.__('Dismiss')}
                onClick={() => this._setMessage(null)}
              >
                ×
              </button>
            </>
          )}
        </div>
        <p className="jp-nbpool-empty" hidden={!empty}>
          {empty}
        </p>
        {status && !empty && this._body(status)}
      </>
    );
  }

  private _body(status: IPoolStatus): JSX.Element {
    const trans = this._trans;
    const model = this._model;
    const summary = model.summary;
    const age = (Date.now() - model.receivedAt) / 1000;
    const live = liveWorkers(status).length;
    const c = status.counters;
    const size =
      this._sizeEdited || this._sizeFocused ? this._size : String(status.size);
    return (
      <div className="jp-nbpool-body">
        <p className={'jp-nbpool-summary' + (summary?.warn ? ' jp-nbpool-warn' : '')}>
          {summary?.text ?? ''}
        </p>
        <div className="jp-nbpool-controls">
          <label className="jp-nbpool-size">
            {trans.__('Pool size')}{' '}
            <input
              type="text"
              inputMode="numeric"
              className="jp-nbpool-size-input jp-mod-styled"
              value={size}
              onFocus={() => {
                this._size = size;
                this._sizeFocused = true;
              }}
              onBlur={() => (this._sizeFocused = false)}
              onChange={event => {
                this._size = event.target.value;
                this._sizeEdited = true;
                this.update();
              }}
              onKeyDown={event => {
                if (event.key === 'Enter') {
                  this._resize(size);
                }
              }}
            />
          </label>
          <button
            className="jp-nbpool-button"
            data-action="resize"
            title={trans.__('Keep this many workers warm')}
            onClick={() => this._resize(size)}
          >
            {trans.__('Resize')}
          </button>
          {status.keep_sessions && (
            <button
              className="jp-nbpool-button"
              data-action="detach"
              title={trans.__(
                'Close the pool and leave its kept sessions running; %pool start --keep re-adopts them'
              )}
              disabled={this._pending.has(actionKey({ action: 'detach' }))}
              onClick={() => this._run({ action: 'detach' })}
            >
              {trans.__('Detach')}
            </button>
          )}
          <button
            className="jp-nbpool-button"
            data-action="stop"
            title={trans.__("Stop every worker, kept sessions' too")}
            disabled={this._pending.has(actionKey({ action: 'stop' }))}
            onClick={() => this._run({ action: 'stop' })}
          >
            {trans.__('Stop')}
          </button>
        </div>
        <h3>{trans.__('Workers')}</h3>
        <div className="jp-nbpool-workers jp-nbpool-list">
          {status.workers.length ? (
            status.workers.map(w => this._worker(w, age))
          ) : (
            <p className="jp-nbpool-none">{trans.__('no workers')}</p>
          )}
        </div>
        <h3>{trans.__('Sessions')}</h3>
        <div className="jp-nbpool-sessions jp-nbpool-list">
          {status.sessions.length ? (
            status.sessions.map(s => {
              const end: PoolAction = { action: 'end_session', session: s.name };
              const details = [
                s.kernel,
                trans._n('%1 reset', '%1 resets', s.generation),
                s.queued ? trans.__('%1 queued', s.queued) : '',
                s.kept ? trans.__('kept: outlives the kernel') : ''
              ];
              return (
                <div
                  key={s.name}
                  className="jp-nbpool-row jp-nbpool-session"
                  data-session={s.name}
                  data-kept={String(s.kept)}
                >
                  <div className="jp-nbpool-row-main">
                    <span className="jp-nbpool-id">{s.name}</span>
                    <span className="jp-nbpool-session-worker">
                      {s.worker ? trans.__('on %1', s.worker) : trans.__('no worker')}
                    </span>
                    <span className="jp-nbpool-actions">
                      {this._button(
                        trans.__('End'),
                        end,
                        trans.__('End the session: its worker is replaced, its state is lost')
                      )}
                    </span>
                  </div>
                  <div className="jp-nbpool-row-details">
                    {details.filter(Boolean).join(' · ')}
                  </div>
                </div>
              );
            })
          ) : (
            <p className="jp-nbpool-none">{trans.__('no sessions yet')}</p>
          )}
        </div>
        <h3>{trans.__('Jobs')}</h3>
        {this._jobs(model.jobs)}
        <h3>{trans.__('Queue')}</h3>
        <p className="jp-nbpool-queue">
          {trans.__(
            '%1 request(s) waiting for a worker · %2 live worker(s), size %3, max %4',
            status.waiting,
            live,
            status.size,
            status.max_size
          )}
        </p>
        <h3>{trans.__('Counters')}</h3>
        <p className="jp-nbpool-counters">
          {`executions ${c.executions ?? 0} · failures ${c.failures ?? 0} · ` +
            `restarts ${c.restarts ?? 0} · start failures ${c.start_failures ?? 0} · ` +
            `deaths ${c.deaths ?? 0} · timeouts ${c.timeouts ?? 0}`}
        </p>
        <h3>{trans.__('Recent events')}</h3>
        <ul className="jp-nbpool-events">
          {status.events.length ? (
            status.events
              .slice()
              .reverse()
              .map((e, i) => (
                <li key={`${e.time}-${i}`} className="jp-nbpool-event" data-kind={e.kind}>
                  <span className="jp-nbpool-event-time">
                    {new Date(e.time * 1000).toLocaleTimeString()}
                  </span>
                  {` ${e.kind}: ${e.message}`}
                </li>
              ))
          ) : (
            <li className="jp-nbpool-none">{trans.__('no events yet')}</li>
          )}
        </ul>
      </div>
    );
  }

  private _worker(w: IWorker, age: number): JSX.Element {
    const trans = this._trans;
    const running = w.state === 'busy' || w.state === 'leased';
    const started = w.pid !== null || w.uptime > 0;
    const aged = running || w.state === 'idle' ? age : 0;
    const details = [
      w.kernel,
      w.pid === null ? trans.__('no pid') : `pid ${w.pid}`,
      trans._n('%1 run', '%1 runs', w.executions),
      started ? trans.__('up %1', duration(w.uptime + aged)) : trans.__('not up'),
      w.memory === null ? '' : `${Math.round(w.memory / 2 ** 20)} MiB`,
      w.started ?? '',
      w.attached ? trans.__('attached') : ''
    ];
    return (
      <div
        key={w.id}
        className="jp-nbpool-row jp-nbpool-worker"
        data-worker={w.id}
        data-state={w.state}
      >
        <div className="jp-nbpool-row-main">
          <span className="jp-nbpool-id">{w.id}</span>
          <span className="jp-nbpool-state" style={{ color: STATE_COLOURS[w.state] ?? '' }}>
            {w.state}
          </span>
          <span className="jp-nbpool-worker-session">
            {w.session ?? trans.__('no session')}
          </span>
          <span className="jp-nbpool-actions">
            {this._button(
              trans.__('Interrupt'),
              { action: 'interrupt', worker: w.id },
              trans.__('Interrupt the code it runs'),
              !running
            )}
            {this._button(
              trans.__('Restart'),
              { action: 'restart', worker: w.id },
              trans.__("Replace it by a fresh kernel; its session's state is lost"),
              !['idle', 'leased', 'busy', 'failed'].includes(w.state)
            )}
          </span>
        </div>
        <div className="jp-nbpool-row-details">{details.filter(Boolean).join(' · ')}</div>
        {w.pending_reason && (
          <div className="jp-nbpool-row-details">{w.pending_reason}</div>
        )}
        {w.last_error && <div className="jp-nbpool-row-error">{w.last_error}</div>}
      </div>
    );
  }

  private _jobs(jobs: readonly IJob[]): JSX.Element {
    const trans = this._trans;
    const notebook = this._model.notebook;
    if (!jobs.length) {
      return <p className="jp-nbpool-jobs jp-nbpool-none">{trans.__('no jobs yet')}</p>;
    }
    const cells = new Set(notebook?.content.widgets.map(c => c.model.id) ?? []);
    return (
      <div className="jp-nbpool-jobs jp-nbpool-list">
        {jobs
          .slice()
          .reverse()
          .map(job => {
            const inNotebook = job.cell_id !== null && cells.has(job.cell_id);
            const size = job.background
              ? ` · ${trans._n('%1 output', '%1 outputs', job.outputs)}, ${(job.bytes / 1024).toFixed(1)} kB`
              : '';
            return (
              <div
                key={job.job}
                className="jp-nbpool-row jp-nbpool-job"
                data-job={job.job}
                data-state={job.state}
              >
                <div className="jp-nbpool-row-main">
                  <span className="jp-nbpool-id">{trans.__('job %1', job.job)}</span>
                  <span className="jp-nbpool-job-session">{job.session}</span>
                  <span className="jp-nbpool-job-state">{stateText(job, trans)}</span>
                  <span className="jp-nbpool-actions">
                    {inNotebook && notebook ? (
                      <button
                        className="jp-nbpool-button jp-nbpool-job-show"
                        title={trans.__('Scroll to the cell that ran it')}
                        onClick={() => showCell(notebook, job.cell_id!)}
                      >
                        {trans.__('Show cell')}
                      </button>
                    ) : (
                      <span className="jp-nbpool-none">
                        {job.cell_id === null
                          ? trans.__('no cell id')
                          : trans.__('cell not in this notebook')}
                      </span>
                    )}
                  </span>
                </div>
                <div className="jp-nbpool-row-details">
                  {(job.background ? trans.__('background') : trans.__('foreground')) +
                    ` · ${trans.__('started %1', new Date(job.started * 1000).toLocaleTimeString())}` +
                    (job.ended !== null && job.began !== null
                      ? ` · ${formatDuration(job.ended - job.began)}`
                      : '') +
                    size}
                </div>
                {job.error && <div className="jp-nbpool-row-error">{job.error}</div>}
              </div>
            );
          })}
      </div>
    );
  }

  private _button(
    label: string,
    action: PoolAction,
    title: string,
    disabled = false
  ): JSX.Element {
    const data: { [key: string]: string } = {};
    for (const [key, value] of Object.entries(action)) {
      data[`data-${key}`] = String(value);
    }
    return (
      <button
        className="jp-nbpool-button"
        title={title}
        disabled={disabled || this._pending.has(actionKey(action))}
        onClick={() => this._run(action)}
        {...data}
      >
        {label}
      </button>
    );
  }

  private _onModelChanged(): void {
    const notebook = this._model.notebook;
    if (notebook !== this._shownNotebook) {
      // Another notebook, another pool: its messages and edits do not apply.
      this._shownNotebook = notebook;
      this._message = null;
      this._sizeEdited = false;
    }
    this.update();
  }

  private _restartClock(): void {
    window.clearInterval(this._timer);
    this._timer = 0;
    if (this.isVisible) {
      this._timer = window.setInterval(
        () => this.update(),
        this._settings.current.refreshInterval * 1000
      );
    }
  }

  private _resize(size: string): void {
    this._run({ action: 'resize', size: size.trim() });
    this._sizeEdited = false;
  }

  private _run(action: PoolAction): void {
    const key = actionKey(action);
    this._pending.add(key);
    this._setMessage({ text: this._trans.__('waiting for the kernel…'), error: false });
    const shown = this._model.notebook;
    this._model
      .request(action)
      .then(
        text => ({ text, error: false }),
        (error: Error) => ({ text: error.message, error: true })
      )
      .then(message => {
        this._pending.delete(key);
        if (this._model.notebook === shown) {
          this._setMessage(message);
        } else {
          this.update();
        }
      });
  }

  private _setMessage(message: { text: string; error: boolean } | null): void {
    this._message = message;
    this.update();
  }

  private _model: PoolModel;
  private _settings: PoolSettings;
  private _trans: TranslationBundle;
  private _shownNotebook: unknown = null;
  private _timer = 0;
  private _message: { text: string; error: boolean } | null = null;
  private _size = '';
  private _sizeEdited = false;
  private _sizeFocused = false;
  private _pending = new Set<string>();
}

/**
 * Why there is nothing to show, or '' when there is a pool.
 */
function emptyText(
  trans: TranslationBundle,
  hasNotebook: boolean,
  connected: boolean,
  status: IPoolStatus | null
): string {
  if (!hasNotebook) {
    return trans.__('Open a notebook to see its pool.');
  }
  if (!connected) {
    return trans.__(
      "This notebook's kernel has not loaded nbpool. Run %load_ext nbpool and %pool start in it."
    );
  }
  if (!status) {
    return trans.__("This notebook's kernel has no pool yet. Run %pool start in it.");
  }
  if (status.closed) {
    return trans.__("This notebook's pool was shut down. Run %pool start to start a new one.");
  }
  return '';
}

/**
 * Identifies an action, to disable its button while the kernel works on it.
 */
function actionKey(action: PoolAction): string {
  return JSON.stringify(action);
}

function duration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) {
    return `${s}s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)}m ${s % 60}s`;
  }
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}
