"""The notebook kernel's side: magics, cell output, the widget, the Lab channel.

Inside:

- :mod:`.magics`: ``%pool``, ``%%pool_exec``, ``%pool_push``/``%pool_pull``:
  parse, validate, delegate.
- :mod:`.forwarding`: re-publishes a worker's outputs into the cell that ran
  it (foreground and ``--bg``), with that cell's parent header; a ``--bg``
  cell's outputs go through its job's record first; ``%pool reattach``.
- :mod:`.jobs`: every ``%%pool_exec`` run as a numbered job (cell id, client,
  session, state, times) and each ``--bg`` job's bounded output record, which
  followers (the Lab comm, ``%pool reattach``) get whole, then live.
- :mod:`.broadcast`: ``%%pool_exec --all``.
- :mod:`.transfer`: moving variables between the notebook and a session.
- :mod:`.widget`: the ipywidgets status view.
- :mod:`.labcomm`: the JupyterLab / Notebook 7 status channel (a comm): pool
  status, this kernel's jobs (``cells``), following a job's output.

Data flow of a ``--bg`` cell: worker event -> Forwarder -> CellOutput ->
the job's Record (events to followers, in seq order) -> the notebook.

May import the pool (:mod:`nbpool.pool`) and everything below it; nothing
imports this package but :mod:`nbpool` (lazily, on ``%load_ext``).
"""
