/**
 * The cell commands: `nbpool:run-on-session` (bind the active cells to a
 * session by their first line, then run them; without a session it asks with
 * a picker) and `nbpool:unbind-cell` (remove that line, nothing else).
 *
 * Both load nbpool into the kernel first when it is not loaded there
 * (`PoolChannel.ensureServed`).
 */

import { JupyterFrontEnd } from '@jupyterlab/application';
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { Cell } from '@jupyterlab/cells';
import {
  INotebookTracker,
  NotebookActions,
  NotebookPanel
} from '@jupyterlab/notebook';
import { TranslationBundle } from '@jupyterlab/translation';
import { closeIcon, ReactWidget } from '@jupyterlab/ui-components';
import { ReadonlyPartialJSONObject } from '@lumino/coreutils';
import * as React from 'react';

import { bind, checkSession, parseBinding, unbind } from './binding';
import { PoolModel } from './model';
import { poolIcon } from './panel';
import { PoolChannel } from './comm';

export namespace CommandIDs {
  export const openPanel = 'nbpool:open-panel';
  export const runOnSession = 'nbpool:run-on-session';
  export const unbindCell = 'nbpool:unbind-cell';
}

/**
 * Add the cell commands.
 */
export function addCellCommands(
  app: JupyterFrontEnd,
  tracker: INotebookTracker,
  model: PoolModel,
  trans: TranslationBundle
): void {
  const codeCells = (panel: NotebookPanel): Cell[] =>
    panel.content.widgets.filter(
      cell =>
        panel.content.isSelectedOrActive(cell) && cell.model.type === 'code'
    );

  const activeBinding = () => {
    const cell = tracker.activeCell;
    return cell && cell.model.type === 'code'
      ? parseBinding(cell.model.sharedModel.getSource())
      : null;
  };

  app.commands.addCommand(CommandIDs.runOnSession, {
    label: args => {
      if (args.toolbar) {
        return ''; // the icon and the caption say it
      }
      const session = typeof args.session === 'string' ? args.session : '';
      if (session) {
        return args.background
          ? trans.__('Run in the Background on Session %1', session)
          : trans.__('Run on Session %1', session);
      }
      return args.background
        ? trans.__('Run in the Background on a Session…')
        : trans.__('Run on a Session…');
    },
    caption: trans.__(
      'Bind the cell to a worker session (its first line %1) and run it there',
      '%%pool_exec -s NAME'
    ),
    icon: args => (args.toolbar ? poolIcon : undefined),
    isEnabled: () => !!tracker.activeCell && tracker.activeCell.model.type === 'code',
    execute: async (args: ReadonlyPartialJSONObject) => {
      const panel = tracker.currentWidget;
      if (!panel) {
        return;
      }
      const channel = model.channelFor(panel);
      const cells = codeCells(panel);
      if (!cells.length) {
        return;
      }
      try {
        await channel.ensureServed();
      } catch (error) {
        fail(trans.__('nbpool: %1', (error as Error).message));
        return;
      }
      let session: string;
      let background = !!args.background;
      if (typeof args.session === 'string') {
        try {
          session = checkSession(args.session);
        } catch (error) {
          fail(trans.__('nbpool: %1', (error as Error).message));
          return;
        }
      } else {
        const current = parseBinding(cells[0].model.sharedModel.getSource());
        const picked = await pickSession(
          trans,
          channel,
          current?.session ?? '',
          background || !!current?.background
        );
        if (!picked) {
          return;
        }
        ({ session, background } = picked);
      }
      for (const cell of cells) {
        const source = cell.model.sharedModel.getSource();
        const next = bind(source, session, background);
        if (next !== source) {
          cell.model.sharedModel.setSource(next);
        }
      }
      // These cells, not the selection: it may have moved while the picker was open.
      return NotebookActions.runCells(panel.content, cells, panel.sessionContext);
    }
  });

  app.commands.addCommand(CommandIDs.unbindCell, {
    label: args => (args.toolbar ? '' : trans.__('Unbind from Session')),
    caption: trans.__(
      "Remove the cell's %1 first line: it runs in the notebook kernel again",
      '%%pool_exec'
    ),
    icon: args => (args.toolbar ? closeIcon : undefined),
    isEnabled: () => activeBinding() !== null,
    isVisible: args => !args.toolbar || activeBinding() !== null,
    execute: () => {
      const panel = tracker.currentWidget;
      if (!panel) {
        return;
      }
      for (const cell of codeCells(panel)) {
        const source = cell.model.sharedModel.getSource();
        const next = unbind(source);
        if (next !== source) {
          cell.model.sharedModel.setSource(next);
        }
      }
    }
  });

  // The cell toolbar shows the active cell's state: refresh it when the
  // active cell or its first line changes.
  const changed = () => app.commands.notifyCommandChanged(CommandIDs.unbindCell);
  tracker.activeCellChanged.connect((_, cell) => {
    changed();
    cell?.model.contentChanged.connect(changed);
  });
}

/**
 * A one-line error the user can act on.
 */
function fail(message: string): void {
  Notification.error(message, { autoClose: 10000 });
}

interface IPicked {
  session: string;
  background: boolean;
}

/**
 * Ask for a session: one of the pool's, or a new name. Invalid names are
 * asked again with the reason shown.
 */
async function pickSession(
  trans: TranslationBundle,
  channel: PoolChannel,
  current: string,
  background: boolean
): Promise<IPicked | null> {
  let value: IPicked = { session: current, background };
  let error = '';
  for (;;) {
    const body = new SessionPicker(trans, channel, value, error);
    const result = await showDialog({
      title: trans.__('Run on a session'),
      body,
      buttons: [
        Dialog.cancelButton({ label: trans.__('Cancel') }),
        Dialog.okButton({ label: trans.__('Run') })
      ],
      focusNodeSelector: 'input.jp-nbpool-picker-name'
    });
    if (!result.button.accept || !result.value) {
      return null;
    }
    value = result.value;
    try {
      return { ...value, session: checkSession(value.session) };
    } catch (e) {
      error = (e as Error).message;
    }
  }
}

/**
 * The picker's body: the pool's sessions with their worker and its state
 * (live: it follows the kernel's pushes), a name field (a new session or the
 * one clicked), and "in the background".
 */
class SessionPicker
  extends ReactWidget
  implements Dialog.IBodyWidget<IPicked>
{
  constructor(
    trans: TranslationBundle,
    channel: PoolChannel,
    value: IPicked,
    error: string
  ) {
    super();
    this._trans = trans;
    this._channel = channel;
    channel.changed.connect(this.update, this);
    this._value = { ...value };
    this._error = error;
    this.addClass('jp-nbpool-picker');
  }

  getValue(): IPicked {
    return { ...this._value };
  }

  protected render(): JSX.Element {
    const trans = this._trans;
    const status = this._channel.status;
    const sessions = status?.sessions ?? [];
    const set = (value: Partial<IPicked>) => {
      this._value = { ...this._value, ...value };
      this.update();
    };
    return (
      <>
        {sessions.length ? (
          <ul className="jp-nbpool-picker-sessions" role="listbox">
            {sessions.map(s => {
              const worker = status?.workers.find(w => w.id === s.worker);
              const selected = s.name === this._value.session;
              return (
                <li
                  key={s.name}
                  role="option"
                  aria-selected={selected}
                  data-session={s.name}
                  className={
                    'jp-nbpool-picker-session' + (selected ? ' jp-mod-selected' : '')
                  }
                  onClick={() => set({ session: s.name })}
                >
                  <span className="jp-nbpool-id">{s.name}</span>
                  <span className="jp-nbpool-picker-worker">
                    {worker
                      ? trans.__('on %1, %2', worker.id, worker.state)
                      : trans.__('no worker')}
                  </span>
                  {s.queued > 0 && (
                    <span>{trans.__('%1 queued', s.queued)}</span>
                  )}
                </li>
              );
            })}
          </ul>
        ) : (
          <p className="jp-nbpool-none">
            {trans.__('The pool has no sessions yet: name a new one.')}
          </p>
        )}
        <label className="jp-nbpool-picker-field">
          {trans.__('Session')}
          <input
            className="jp-nbpool-picker-name jp-mod-styled"
            value={this._value.session}
            placeholder={trans.__('a session name, e.g. etl')}
            onChange={event => set({ session: event.target.value })}
          />
        </label>
        <label className="jp-nbpool-picker-field">
          <input
            type="checkbox"
            className="jp-nbpool-picker-bg"
            checked={this._value.background}
            onChange={event => set({ background: event.target.checked })}
          />
          {trans.__('In the background (--bg): the cell returns at once')}
        </label>
        {this._error && (
          <p className="jp-nbpool-picker-error" role="alert">
            {this._error}
          </p>
        )}
      </>
    );
  }

  private _trans: TranslationBundle;
  private _channel: PoolChannel;
  private _value: IPicked;
  private _error: string;
}
