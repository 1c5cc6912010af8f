/**
 * nbpool's JupyterLab extension: a status bar item and a side panel showing
 * the worker pool of the current notebook's kernel, with its actions.
 *
 * `model.ts` holds the state, `comm.ts` talks to the kernel, `panel.ts` and
 * `statusitem.ts` are the views.
 */

import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';

import { PoolModel } from './model';
import { PoolPanel, poolIcon } from './panel';
import { PoolStatusItem } from './statusitem';

namespace CommandIDs {
  export const openPanel = 'nbpool:open-panel';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nbpool:plugin',
  description: "Shows the nbpool worker pool of the current notebook's kernel.",
  autoStart: true,
  requires: [INotebookTracker],
  optional: [IStatusBar, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null
  ) => {
    const model = new PoolModel(tracker);
    const panel = new PoolPanel(model);
    app.shell.add(panel, 'right', { rank: 900 });

    app.commands.addCommand(CommandIDs.openPanel, {
      label: 'Show the nbpool Panel',
      caption: "The worker pool of the current notebook's kernel",
      icon: poolIcon,
      execute: () => app.shell.activateById(panel.id)
    });
    palette?.addItem({ command: CommandIDs.openPanel, category: 'nbpool' });

    if (statusBar) {
      const item = new PoolStatusItem(model, () => {
        void app.commands.execute(CommandIDs.openPanel);
      });
      statusBar.registerStatusItem(plugin.id, {
        item,
        align: 'left',
        rank: 50,
        isActive: () => model.summary !== null,
        activeStateChanged: model.changed
      });
    }

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
