/**
 * The binding of a cell to a session: its first line `%%pool_exec -s NAME
 * [--bg]` (shared/DESIGN.md §7: the line, not cell metadata, so that a bound
 * cell runs the same in nbclient, papermill and VS Code).
 *
 * Pure functions on cell source; the commands write with them and the
 * badges read with them.
 */

/**
 * The longest session name (`nbpool.checks.MAX_NAME`).
 */
export const MAX_NAME = 200;

/**
 * What a cell's `%%pool_exec` first line says.
 */
export interface IBinding {
  /** The session, unquoted; null when the line names none (the default one). */
  session: string | null;
  background: boolean;
}

const MAGIC = /^\s*%%pool_exec(?:\s|$)/;

/**
 * The binding a cell's source declares, or null when its first line is not
 * `%%pool_exec`.
 */
export function parseBinding(source: string): IBinding | null {
  const first = source.split('\n', 1)[0];
  if (!MAGIC.test(first)) {
    return null;
  }
  const args = splitArgs(first.replace(MAGIC, ''));
  let session: string | null = null;
  let background = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === '--bg') {
      background = true;
    } else if (arg === '-s' || arg === '--session') {
      session = unquote(args[++i] ?? '') || null;
    } else if (arg.startsWith('--session=')) {
      session = unquote(arg.slice('--session='.length)) || null;
    }
  }
  return { session, background };
}

/**
 * `source` with its first line set to `%%pool_exec -s NAME [--bg]`: an
 * existing `%%pool_exec` line is replaced, any other first line kept below.
 */
export function bind(
  source: string,
  session: string,
  background: boolean
): string {
  const line = `%%pool_exec -s ${quote(session)}${background ? ' --bg' : ''}`;
  const rest = parseBinding(source) ? dropFirstLine(source) : source;
  return rest ? `${line}\n${rest}` : line;
}

/**
 * `source` without its `%%pool_exec` first line (unchanged when it has none).
 */
export function unbind(source: string): string {
  return parseBinding(source) ? dropFirstLine(source) : source;
}

/**
 * A session name as the magics take it: surrounding whitespace and matching
 * quotes stripped, then checked like `nbpool.checks.session_name`.
 *
 * @returns the name, or throws an Error with a one-line reason.
 */
export function checkSession(text: string): string {
  const name = unquote(text);
  if (!name) {
    throw new Error("the session name is empty; give a name such as 'etl'");
  }
  if (name.length > MAX_NAME) {
    throw new Error(
      `the session name is ${name.length} characters long; at most ${MAX_NAME} are allowed`
    );
  }
  // Unicode category Cc, as the kernel's check.
  const bad = Array.from(name).find(c => /\p{Cc}/u.test(c));
  if (bad !== undefined) {
    throw new Error(
      `the session name contains the control character U+${bad
        .codePointAt(0)!
        .toString(16)
        .toUpperCase()
        .padStart(4, '0')}`
    );
  }
  if (name.includes("'") && name.includes('"')) {
    throw new Error(
      'a session name with both kinds of quote cannot be written on the %%pool_exec line'
    );
  }
  return name;
}

/**
 * `name` as an argument of the magic line: bare when it is a plain word,
 * else in the quote it does not contain (IPython keeps quotes, the magic
 * strips them), so `a b` is written `'a b'`.
 */
export function quote(name: string): string {
  if (/^[A-Za-z0-9_.][A-Za-z0-9_.-]*$/.test(name)) {
    return name;
  }
  return name.includes("'") ? `"${name}"` : `'${name}'`;
}

function unquote(text: string): string {
  let t = text.trim();
  while (t.length >= 2 && t[0] === t[t.length - 1] && `'"`.includes(t[0])) {
    t = t.slice(1, -1).trim();
  }
  return t;
}

function dropFirstLine(source: string): string {
  const end = source.indexOf('\n');
  return end < 0 ? '' : source.slice(end + 1);
}

/**
 * Split a magic line the way IPython's `arg_split` does for these options:
 * on whitespace, keeping quoted parts (with their quotes) together.
 */
function splitArgs(line: string): string[] {
  return line.match(/(?:[^\s'"]+|'[^']*'|"[^"]*")+/g) ?? [];
}
