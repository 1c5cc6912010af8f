/**
 * The side panel: workers, sessions, queue and events of the current
 * notebook's pool, with its actions (interrupt, restart, end session, resize).
 *
 * Everything shown comes from the kernel's snapshots; actions go to the
 * kernel, which answers with a one-line message or error shown at the top.
 */

import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { liveWorkers, PoolModel } from './model';
import { IPoolStatus, PoolAction, STATE_COLOURS } from './types';

const POOL_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <rect x="2" y="3" width="9" height="7" rx="1.5"/><rect x="13" y="3" width="9" height="7" rx="1.5"/>
    <rect x="2" y="14" width="9" height="7" rx="1.5"/><rect x="13" y="14" width="9" height="7" rx="1.5" opacity="0.5"/>
  </g>
</svg>`;

export const poolIcon = new LabIcon({ name: 'nbpool:pool', svgstr: POOL_SVG });

/**
 * How often the panel ages the uptimes while it is visible (ms).
 */
const TICK = 1000;

export class PoolPanel extends Widget {
  constructor(model: PoolModel) {
    super();
    this._model = model;
    this.id = 'nbpool-panel';
    this.title.icon = poolIcon;
    this.title.caption = 'nbpool: worker pool of the current notebook';
    this.addClass('jp-nbpool-panel');
    this._build();
    model.changed.connect(this._onModelChanged, this);
    this._render();
  }

  protected onAfterShow(): void {
    this._render();
    this._timer = window.setInterval(() => this._render(), TICK);
  }

  protected onAfterHide(): void {
    window.clearInterval(this._timer);
  }

  dispose(): void {
    window.clearInterval(this._timer);
    super.dispose();
  }

  private _build(): void {
    const head = el('div', 'jp-nbpool-head');
    head.append(el('h2', '', 'nbpool'), this._notebook);
    this._message.setAttribute('role', 'status');
    const sizeLabel = el('label', 'jp-nbpool-size');
    this._size.type = 'text';
    this._size.inputMode = 'numeric';
    this._size.className = 'jp-nbpool-size-input jp-mod-styled';
    this._size.addEventListener('input', () => (this._sizeEdited = true));
    this._size.addEventListener('keydown', event => {
      if (event.key === 'Enter') {
        this._resize();
      }
    });
    sizeLabel.append('Pool size ', this._size);
    const resize = el('button', 'jp-nbpool-button', 'Resize');
    resize.dataset.action = 'resize';
    resize.title = 'Keep this many workers warm';
    this._detach.dataset.action = 'detach';
    this._detach.title =
      'Close the pool and leave its kept sessions running; %pool start --keep re-adopts them';
    this._stop.dataset.action = 'stop';
    this._stop.title = "Stop every worker, kept sessions' too";
    this._controls.append(sizeLabel, resize, this._detach, this._stop);
    this.node.append(
      head,
      this._message,
      this._empty,
      this._body
    );
    this._body.append(
      this._summary,
      this._controls,
      el('h3', '', 'Workers'),
      this._workers,
      el('h3', '', 'Sessions'),
      this._sessions,
      el('h3', '', 'Queue'),
      this._queue,
      el('h3', '', 'Counters'),
      this._counters,
      el('h3', '', 'Recent events'),
      this._events
    );
    this.node.addEventListener('click', event => this._onClick(event));
  }

  private _onModelChanged(): void {
    const notebook = this._model.notebook;
    if (notebook !== this._shownNotebook) {
      // Another notebook, another pool: its messages and edits do not apply.
      this._shownNotebook = notebook;
      this._setMessage('', false);
      this._sizeEdited = false;
    }
    this._render();
  }

  private _render(): void {
    const model = this._model;
    const notebook = model.notebook;
    const status = model.status;
    this._notebook.textContent = notebook ? notebook.title.label : '';
    const empty = emptyText(notebook !== null, model.connected, status);
    this._empty.textContent = empty;
    this._empty.hidden = !empty;
    this._body.hidden = !!empty;
    if (!status || empty) {
      return;
    }
    this._summary.textContent = model.summary?.text ?? '';
    this._summary.classList.toggle('jp-nbpool-warn', model.summary?.warn ?? false);
    if (!this._sizeEdited && document.activeElement !== this._size) {
      this._size.value = String(status.size);
    }
    this._detach.hidden = !status.keep_sessions;
    this._detach.disabled = this._pending.has(actionKey({ action: 'detach' }));
    this._stop.disabled = this._pending.has(actionKey({ action: 'stop' }));
    const age = (Date.now() - model.receivedAt) / 1000;
    update(this._workers, workersTable(status, age, this._pending));
    update(this._sessions, sessionsTable(status, this._pending));
    const live = liveWorkers(status).length;
    this._queue.textContent =
      `${status.waiting} request(s) waiting for a worker · ` +
      `${live} live worker(s), size ${status.size}, max ${status.max_size}`;
    const c = status.counters;
    this._counters.textContent =
      `executions ${c.executions ?? 0} · failures ${c.failures ?? 0} · ` +
      `restarts ${c.restarts ?? 0} · start failures ${c.start_failures ?? 0} · ` +
      `deaths ${c.deaths ?? 0} · timeouts ${c.timeouts ?? 0}`;
    update(this._events, ...eventItems(status));
  }

  private _onClick(event: MouseEvent): void {
    const target = (event.target as HTMLElement).closest('button');
    if (!target || !this.node.contains(target)) {
      return;
    }
    const data = target.dataset;
    if (data.dismiss !== undefined) {
      this._setMessage('', false);
      return;
    }
    let action: PoolAction;
    switch (data.action) {
      case 'interrupt':
      case 'restart':
        action = { action: data.action, worker: data.worker ?? '' };
        break;
      case 'end_session':
        action = { action: 'end_session', session: data.session ?? '' };
        break;
      case 'detach':
      case 'stop':
        action = { action: data.action };
        break;
      case 'resize':
        this._resize();
        return;
      default:
        return;
    }
    this._run(action);
  }

  private _resize(): void {
    this._run({ action: 'resize', size: this._size.value.trim() });
    this._sizeEdited = false;
  }

  private _run(action: PoolAction): void {
    const key = actionKey(action);
    this._pending.add(key);
    this._setMessage('waiting for the kernel…', false);
    this._render();
    const shown = this._model.notebook;
    this._model
      .request(action)
      .then(
        message => [message, false] as const,
        (error: Error) => [error.message, true] as const
      )
      .then(([message, isError]) => {
        this._pending.delete(key);
        if (this._model.notebook === shown) {
          this._setMessage(message, isError);
        }
        this._render();
      });
  }

  private _setMessage(text: string, isError: boolean): void {
    this._message.replaceChildren();
    this._message.hidden = !text;
    this._message.classList.toggle('jp-nbpool-error', isError);
    this._message.setAttribute('role', isError ? 'alert' : 'status');
    if (text) {
      const dismiss = el('button', 'jp-nbpool-dismiss', '×');
      dismiss.dataset.dismiss = '';
      dismiss.title = 'Dismiss';
      this._message.append(el('span', 'jp-nbpool-message-text', text), dismiss);
    }
  }

  private _model: PoolModel;
  private _shownNotebook: unknown = null;
  private _timer = 0;
  private _sizeEdited = false;
  private _pending = new Set<string>();
  private _notebook = el('div', 'jp-nbpool-notebook');
  private _message = el('div', 'jp-nbpool-message');
  private _empty = el('p', 'jp-nbpool-empty');
  private _body = el('div', 'jp-nbpool-body');
  private _summary = el('p', 'jp-nbpool-summary');
  private _controls = el('div', 'jp-nbpool-controls');
  private _size = document.createElement('input');
  private _detach = el('button', 'jp-nbpool-button', 'Detach') as HTMLButtonElement;
  private _stop = el('button', 'jp-nbpool-button', 'Stop') as HTMLButtonElement;
  private _workers = el('div', 'jp-nbpool-workers');
  private _sessions = el('div', 'jp-nbpool-sessions');
  private _queue = el('p', 'jp-nbpool-queue');
  private _counters = el('p', 'jp-nbpool-counters');
  private _events = el('ul', 'jp-nbpool-events');
}

/**
 * Why there is nothing to show, or '' when there is a pool.
 */
function emptyText(
  hasNotebook: boolean,
  connected: boolean,
  status: IPoolStatus | null
): string {
  if (!hasNotebook) {
    return 'Open a notebook to see its pool.';
  }
  if (!connected) {
    return "This notebook's kernel has not loaded nbpool. Run %load_ext nbpool and %pool start in it.";
  }
  if (!status) {
    return "This notebook's kernel has no pool yet. Run %pool start in it.";
  }
  if (status.closed) {
    return "This notebook's pool was shut down. Run %pool start to start a new one.";
  }
  return '';
}

function workersTable(
  status: IPoolStatus,
  age: number,
  pending: Set<string>
): HTMLElement {
  const list = el('div', 'jp-nbpool-list');
  if (!status.workers.length) {
    list.append(el('p', 'jp-nbpool-none', 'no workers'));
  }
  for (const w of status.workers) {
    const row = el('div', 'jp-nbpool-row jp-nbpool-worker');
    row.dataset.worker = w.id;
    row.dataset.state = w.state;
    const state = el('span', 'jp-nbpool-state', w.state);
    state.style.color = STATE_COLOURS[w.state] ?? '';
    const running = w.state === 'busy' || w.state === 'leased';
    const interrupt: PoolAction = { action: 'interrupt', worker: w.id };
    const restart: PoolAction = { action: 'restart', worker: w.id };
    const actions = el('span', 'jp-nbpool-actions');
    actions.append(
      button(
        'Interrupt',
        interrupt,
        'Interrupt the code it runs',
        !running || pending.has(actionKey(interrupt))
      ),
      button(
        'Restart',
        restart,
        "Replace it by a fresh kernel; its session's state is lost",
        !['idle', 'leased', 'busy', 'failed'].includes(w.state) ||
          pending.has(actionKey(restart))
      )
    );
    const main = el('div', 'jp-nbpool-row-main');
    main.append(
      el('span', 'jp-nbpool-id', w.id),
      state,
      el('span', 'jp-nbpool-worker-session', w.session ?? 'no session'),
      actions
    );
    const started = w.pid !== null || w.uptime > 0;
    const aged = running || w.state === 'idle' ? age : 0;
    const details = [
      w.kernel,
      w.pid === null ? 'no pid' : `pid ${w.pid}`,
      `${w.executions} run${w.executions === 1 ? '' : 's'}`,
      started ? `up ${duration(w.uptime + aged)}` : 'not up',
      w.memory === null ? '' : `${Math.round(w.memory / 2 ** 20)} MiB`,
      w.started ?? '',
      w.attached ? 'attached' : ''
    ];
    row.append(main, el('div', 'jp-nbpool-row-details', details.filter(Boolean).join(' · ')));
    if (w.pending_reason) {
      row.append(el('div', 'jp-nbpool-row-details', w.pending_reason));
    }
    if (w.last_error) {
      row.append(el('div', 'jp-nbpool-row-error', w.last_error));
    }
    list.append(row);
  }
  return list;
}

function sessionsTable(status: IPoolStatus, pending: Set<string>): HTMLElement {
  const list = el('div', 'jp-nbpool-list');
  if (!status.sessions.length) {
    list.append(el('p', 'jp-nbpool-none', 'no sessions yet'));
  }
  for (const s of status.sessions) {
    const row = el('div', 'jp-nbpool-row jp-nbpool-session');
    row.dataset.session = s.name;
    row.dataset.kept = String(s.kept);
    const end: PoolAction = { action: 'end_session', session: s.name };
    const actions = el('span', 'jp-nbpool-actions');
    actions.append(
      button(
        'End',
        end,
        'End the session: its worker is replaced, its state is lost',
        pending.has(actionKey(end))
      )
    );
    const main = el('div', 'jp-nbpool-row-main');
    main.append(
      el('span', 'jp-nbpool-id', s.name),
      el('span', 'jp-nbpool-session-worker', s.worker ? `on ${s.worker}` : 'no worker'),
      actions
    );
    const details = [
      s.kernel,
      `${s.generation} reset${s.generation === 1 ? '' : 's'}`,
      s.queued ? `${s.queued} queued` : '',
      s.kept ? 'kept: outlives the kernel' : ''
    ];
    row.append(main, el('div', 'jp-nbpool-row-details', details.filter(Boolean).join(' · ')));
    list.append(row);
  }
  return list;
}

function eventItems(status: IPoolStatus): HTMLElement[] {
  if (!status.events.length) {
    return [el('li', 'jp-nbpool-none', 'no events yet')];
  }
  return status.events
    .slice()
    .reverse()
    .map(e => {
      const item = el('li', 'jp-nbpool-event');
      item.dataset.kind = e.kind;
      const when = new Date(e.time * 1000).toLocaleTimeString();
      item.append(el('span', 'jp-nbpool-event-time', when), ` ${e.kind}: ${e.message}`);
      return item;
    });
}

function button(
  label: string,
  action: PoolAction,
  title: string,
  disabled = false
): HTMLButtonElement {
  const b = el('button', 'jp-nbpool-button', label) as HTMLButtonElement;
  b.title = title;
  b.disabled = disabled;
  for (const [key, value] of Object.entries(action)) {
    b.dataset[key] = String(value);
  }
  return b;
}

/**
 * Identifies an action, to disable its button while the kernel works on it.
 */
function actionKey(action: PoolAction): string {
  return JSON.stringify(action);
}

/**
 * Replace the children of `container` by `children`, changing the live DOM
 * only where it differs: buttons stay the same elements across the frequent
 * re-renders, so a click is never lost to a re-render.
 */
function update(container: HTMLElement, ...children: (Node | string)[]): void {
  const next = container.cloneNode(false) as HTMLElement;
  next.append(...children);
  morph(container, next);
}

function morph(current: Element, next: Element): void {
  for (const { name } of Array.from(current.attributes)) {
    if (!next.hasAttribute(name)) {
      current.removeAttribute(name);
    }
  }
  for (const { name, value } of Array.from(next.attributes)) {
    if (current.getAttribute(name) !== value) {
      current.setAttribute(name, value);
    }
  }
  const have = Array.from(current.childNodes);
  const want = Array.from(next.childNodes);
  want.forEach((node, i) => {
    const old = have[i];
    if (!old) {
      current.appendChild(node);
    } else if (old.nodeName !== node.nodeName) {
      current.replaceChild(node, old);
    } else if (old.nodeType === Node.ELEMENT_NODE) {
      morph(old as Element, node as Element);
    } else if (old.nodeValue !== node.nodeValue) {
      old.nodeValue = node.nodeValue;
    }
  });
  for (const old of have.slice(want.length)) {
    current.removeChild(old);
  }
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

/**
 * An element with a class and text; text is never parsed as HTML (session
 * names and error messages come from the kernel).
 */
function el(tag: string, className = '', text = ''): HTMLElement {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text) {
    node.textContent = text;
  }
  return node;
}
