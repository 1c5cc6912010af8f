/**
 * nbpool's JupyterLab and Notebook 7 extension: the worker pool of the
 * current notebook's kernel (status bar item, notebook toolbar summary, side
 * panel), cells bound to sessions (commands, badges, notifications), and
 * background output that outlives the tab (reattach on open).
 *
 * `model.ts` holds the state (and the settings), `binding.ts` reads and
 * writes a cell's `%%pool_exec` line, `comm.ts` talks to the kernel,
 * `reattach.ts` writes followed jobs' output into the cells; the views are
 * `panel.tsx`, `statusitem.tsx`, `cells.tsx` (badges, notifications) and
 * `commands.tsx` (the cell commands and their session picker).
 */

import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, IToolbarWidgetRegistry } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import { CellBadges, JobNotifier } from './cells';
import { addCellCommands, CommandIDs } from './commands';
import { PoolModel, PoolSettings, summarize } from './model';
import { PoolPanel, poolIcon } from './panel';
import { Reattacher } from './reattach';
import { PoolStatusItem } from './statusitem';

const PLUGIN_ID = 'nbpool:plugin';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    "Shows the nbpool worker pool of the current notebook's kernel and runs cells on its sessions.",
  autoStart: true,
  requires: [INotebookTracker],
  optional: [
    IStatusBar,
    ICommandPalette,
    ISettingRegistry,
    ITranslator,
    IToolbarWidgetRegistry
  ],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null,
    settingRegistry: ISettingRegistry | null,
    translator: ITranslator | null,
    toolbarRegistry: IToolbarWidgetRegistry | null
  ) => {
    const trans = (translator ?? nullTranslator).load('nbpool');
    const settings = new PoolSettings();
    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(loaded => {
          const apply = () => settings.update(loaded.composite as object);
          loaded.changed.connect(apply);
          apply();
        })
        .catch(reason =>
          console.warn(`nbpool: settings not loaded, using the defaults: ${reason}`)
        );
    }

    const model = new PoolModel(tracker);
    const perNotebook = (panel: NotebookPanel) => {
      const channel = model.channelFor(panel);
      const parts = [
        new CellBadges(panel, channel, settings, trans),
        new JobNotifier(panel, channel, settings, trans),
        new Reattacher(panel, channel)
      ];
      panel.disposed.connect(() => parts.forEach(part => part.dispose()));
    };
    model.forEach(panel => perNotebook(panel));
    model.tracked.connect((_, { panel }) => perNotebook(panel));

    const panel = new PoolPanel(model, settings, trans);
    app.shell.add(panel, 'right', { rank: 900 });

    app.commands.addCommand(CommandIDs.openPanel, {
      label: trans.__('Show the nbpool Panel'),
      caption: trans.__("The worker pool of the current notebook's kernel"),
      icon: poolIcon,
      execute: () => app.shell.activateById(panel.id)
    });
    addCellCommands(app, tracker, model, trans);
    for (const command of [
      CommandIDs.openPanel,
      CommandIDs.runOnSession,
      CommandIDs.unbindCell
    ]) {
      palette?.addItem({ command, category: 'nbpool' });
    }
    palette?.addItem({
      command: CommandIDs.runOnSession,
      args: { background: true },
      category: 'nbpool'
    });

    const openPanel = () => {
      void app.commands.execute(CommandIDs.openPanel);
    };
    if (statusBar) {
      const item = new PoolStatusItem(model, trans, openPanel);
      statusBar.registerStatusItem(PLUGIN_ID, {
        item,
        align: 'left',
        rank: 50,
        isActive: () => model.summary !== null,
        activeStateChanged: model.changed
      });
    }
    // The notebook toolbar's summary is for apps without a status bar
    // (Notebook 7); JupyterLab shows it in the status bar instead.
    toolbarRegistry?.addFactory<NotebookPanel>('Notebook', 'nbpool-summary', notebook => {
      if (statusBar) {
        return new Widget();
      }
      const channel = model.channelFor(notebook);
      const source = {
        changed: channel.changed,
        get summary() {
          return summarize(channel.status);
        }
      };
      return new PoolStatusItem(source, trans, openPanel);
    });

    // A reloaded page cannot close its comms any more: close them while it
    // can (not when the page is only put in the back-forward cache).
    window.addEventListener('pagehide', event => {
      if (!event.persisted) {
        model.dispose();
      }
    });
  }
};

export default plugin;
