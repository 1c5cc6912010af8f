/**
 * The pool summary, `nbpool 3/4 busy · 2 queued`: the status bar item for
 * the current notebook (JupyterLab), and the notebook toolbar item for its
 * own notebook (Notebook 7, which has no status bar).
 */

import { TranslationBundle } from '@jupyterlab/translation';
import { ReactWidget } from '@jupyterlab/ui-components';
import { ISignal } from '@lumino/signaling';
import * as React from 'react';

import { ISummary } from './model';

/**
 * Where a summary item reads from: a pool model or one notebook's channel.
 */
export interface ISummarySource {
  readonly changed: ISignal<unknown, void>;
  readonly summary: ISummary | null;
}

export class PoolStatusItem extends ReactWidget {
  constructor(
    source: ISummarySource,
    trans: TranslationBundle,
    onClick: () => void
  ) {
    super();
    this._source = source;
    this._trans = trans;
    this._onClick = onClick;
    this.addClass('jp-nbpool-status');
    source.changed.connect(this._onChanged, this);
    this._onChanged();
  }

  protected render(): JSX.Element {
    return (
      <span
        className="jp-nbpool-status-text"
        title={this._trans.__('nbpool: click to open the pool panel')}
        onClick={this._onClick}
      >
        {this._source.summary?.text ?? ''}
      </span>
    );
  }

  private _onChanged(): void {
    const summary = this._source.summary;
    this.toggleClass('jp-nbpool-warn', summary?.warn ?? false);
    this.toggleClass('jp-nbpool-none', !summary);
    this.update();
  }

  private _source: ISummarySource;
  private _trans: TranslationBundle;
  private _onClick: () => void;
}
