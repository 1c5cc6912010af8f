/**
 * Reattach on open (issue 20): background output that outlives the tab.
 *
 * The frontend half of the exactly-once rule (protocol in
 * `nbpool/notebook/labcomm.py`): on every (re)opened comm, for each newest,
 * non-superseded background job whose cell is a cell of this notebook and
 * which another client ran (a page whose `kernel.clientId` is the job's
 * client got its output live through JupyterLab's own future routing), this
 * page follows the job: it REPLACES the cell's outputs by the kernel's
 * record (so whatever an autosave stored is not doubled), then applies the
 * job's live events with a higher seq, in order, until "end". The outputs are
 * written into the cell model, so they are part of the document and saved
 * with it. Cells that were deleted are skipped; jobs without a cell id are
 * never followed.
 */

import { Cell, ICodeCellModel } from '@jupyterlab/cells';
import { IOutput, IStream, MultilineString } from '@jupyterlab/nbformat';
import { Notebook, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { IOutputAreaModel } from '@jupyterlab/outputarea';
import { IDisposable } from '@lumino/disposable';
import { Signal } from '@lumino/signaling';

import { IJobEventArgs, PoolChannel } from './comm';
import { ENDED_STATES, IFollowReply, IJob, JobEvent } from './types';

/**
 * One notebook's followed jobs.
 */
export class Reattacher implements IDisposable {
  constructor(panel: NotebookPanel, channel: PoolChannel) {
    this._panel = panel;
    this._channel = channel;
    channel.opened.connect(this._onOpened, this);
    channel.jobEvent.connect(this._onEvent, this);
    NotebookActions.executionScheduled.connect(this._onScheduled, this);
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /**
   * Job numbers followed now (for tests and the panel).
   */
  get following(): number[] {
    return Array.from(this._follows.keys());
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._follows.clear();
    Signal.disconnectReceiver(this);
  }

  private _onOpened(_: PoolChannel, jobs: readonly IJob[]): void {
    // A new comm: what the old one followed is not sent on this one.
    this._follows.clear();
    const me = this._channel.clientId;
    for (const job of jobs) {
      if (
        !job.background ||
        job.cell_id === null ||
        job.superseded ||
        job.client === me
      ) {
        continue;
      }
      const outputs = this._outputsOf(job.cell_id);
      if (outputs) {
        void this._follow(job, job.cell_id, outputs);
      }
    }
  }

  private async _follow(
    job: IJob,
    cellId: string,
    outputs: IOutputAreaModel
  ): Promise<void> {
    const follow: Private.IFollow = {
      cellId,
      outputs,
      record: [],
      seq: 0,
      ready: false,
      buffer: []
    };
    // Registered before asking: events may come before the reply.
    this._follows.set(job.job, follow);
    let reply: IFollowReply;
    try {
      reply = (await this._channel.ask({
        action: 'follow',
        job: job.job
      })) as unknown as IFollowReply;
    } catch (error) {
      // The job is gone, or the comm closed: the cell keeps what it shows.
      this._follows.delete(job.job);
      console.warn(`nbpool: could not reattach job ${job.job}: ${error}`);
      return;
    }
    if (this._follows.get(job.job) !== follow) {
      return; // the cell was re-run meanwhile, or the comm reopened
    }
    follow.record = (reply.outputs ?? []).map(o => ({ ...o }));
    follow.seq = reply.seq ?? 0;
    Private.replaceAll(outputs, follow.record);
    follow.ready = true;
    const buffered = follow.buffer.sort((a, b) => a.seq - b.seq);
    follow.buffer = [];
    let ended = ENDED_STATES.has(reply.state);
    for (const item of buffered) {
      ended = this._apply(follow, item) || ended;
    }
    if (ended) {
      this._follows.delete(job.job);
    }
  }

  private _onEvent(_: PoolChannel, args: IJobEventArgs): void {
    const follow = this._follows.get(args.job);
    if (!follow) {
      return;
    }
    if (!follow.ready) {
      follow.buffer.push(args);
      return;
    }
    if (this._apply(follow, args)) {
      this._follows.delete(args.job);
    }
  }

  /**
   * Apply one event unless it is already in the record; whether it was "end".
   */
  private _apply(follow: Private.IFollow, args: IJobEventArgs): boolean {
    if (args.seq <= follow.seq) {
      return false;
    }
    follow.seq = args.seq;
    return Private.apply(follow.record, follow.outputs, args.event);
  }

  /**
   * A cell of ours re-run here: JupyterLab's own future owns its outputs now.
   */
  private _onScheduled(
    _: unknown,
    args: { notebook: Notebook; cell: Cell }
  ): void {
    if (args.notebook !== this._panel.content) {
      return;
    }
    for (const [job, follow] of this._follows) {
      if (follow.cellId === args.cell.model.id) {
        this._follows.delete(job);
        this._channel.ask({ action: 'unfollow', job }).catch(() => undefined);
      }
    }
  }

  private _outputsOf(cellId: string): IOutputAreaModel | null {
    const cells = this._panel.content.model?.cells;
    if (!cells) {
      return null;
    }
    for (let i = 0; i < cells.length; i++) {
      const cell = cells.get(i);
      if (cell.id === cellId && cell.type === 'code') {
        return (cell as ICodeCellModel).outputs;
      }
    }
    return null;
  }

  private _panel: NotebookPanel;
  private _channel: PoolChannel;
  private _follows = new Map<number, Private.IFollow>();
  private _isDisposed = false;
}

namespace Private {
  export interface IFollow {
    cellId: string;
    outputs: IOutputAreaModel;
    /** The job's output list as the kernel has it (the events' indices refer to it). */
    record: IOutput[];
    seq: number;
    /** The follow reply was applied; until then events are buffered. */
    ready: boolean;
    buffer: IJobEventArgs[];
  }

  /**
   * Apply `event` to the record and the cell's outputs; whether it was "end".
   */
  export function apply(
    record: IOutput[],
    outputs: IOutputAreaModel,
    event: JobEvent
  ): boolean {
    switch (event.op) {
      case 'append':
        record.push({ ...event.output });
        outputs.add(event.output);
        break;
      case 'stream': {
        const stream = record[event.index] as IStream | undefined;
        if (!stream || stream.output_type !== 'stream') {
          break;
        }
        stream.text = join(stream.text) + event.text;
        if (event.index < outputs.length) {
          outputs.set(event.index, { ...stream });
        }
        break;
      }
      case 'set':
        if (event.index < record.length) {
          record[event.index] = { ...event.output };
          if (event.index < outputs.length) {
            outputs.set(event.index, event.output);
          }
        }
        break;
      case 'clear':
        record.length = 0;
        outputs.clear();
        break;
      case 'end':
        return true;
    }
    if (outputs.length !== record.length) {
      // The output area merged two neighbouring outputs: show the record.
      replaceAll(outputs, record);
    }
    return false;
  }

  export function replaceAll(outputs: IOutputAreaModel, record: IOutput[]): void {
    outputs.clear();
    for (const output of record) {
      outputs.add({ ...output });
    }
  }

  function join(text: MultilineString): string {
    return Array.isArray(text) ? text.join('') : text;
  }
}
