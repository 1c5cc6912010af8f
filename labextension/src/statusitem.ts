/**
 * The status bar item: `nbpool 3/4 busy · 2 queued` for the current notebook.
 */

import { Widget } from '@lumino/widgets';

import { PoolModel } from './model';

export class PoolStatusItem extends Widget {
  constructor(model: PoolModel, onClick: () => void) {
    super();
    this._model = model;
    this.addClass('jp-nbpool-status');
    this.node.title = 'nbpool: click to open the pool panel';
    this.node.addEventListener('click', onClick);
    model.changed.connect(this._render, this);
    this._render();
  }

  private _render(): void {
    const summary = this._model.summary;
    this.node.textContent = summary?.text ?? '';
    this.toggleClass('jp-nbpool-warn', summary?.warn ?? false);
  }

  private _model: PoolModel;
}
