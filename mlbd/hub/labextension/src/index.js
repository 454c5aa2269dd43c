// mlbd-deadlines: shows each assignment's due date in nbgrader's Assignment List.
//
// nbgrader's panel renders rows from GET <base>/assignments?course_id=…, whose entries mlbd's
// exchange (mlbd.hub.exchange.PrivateList) gives a `due` (as DEADLINE.md words it) and a `due_utc`.
// The panel itself ignores unknown fields, so this plugin reads the same list and adds a line under
// each row's name: "Due Friday 22 January 2027, 17:00 (Europe/London) · in 3 days" (or "past").
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

const MARK = 'mlbd-due';
const LIST = '#nbgrader-assignment-list';

async function getJSON(settings, path) {
  const response = await ServerConnection.makeRequest(URLExt.join(settings.baseUrl, path), {}, settings);
  return response.ok ? response.json() : null;
}

async function dueDates(settings) {
  const due = {};
  const courses = await getJSON(settings, 'courses');
  for (const course of (courses && courses.success && courses.value) || []) {
    const list = await getJSON(settings, 'assignments?course_id=' + encodeURIComponent(course));
    for (const a of (list && list.success && list.value) || []) {
      if (a.due && a.due_utc) {
        due[a.course_id + '/' + a.assignment_id] = { text: a.due, utc: Date.parse(a.due_utc) };
      }
    }
  }
  return due;
}

function relative(utc, now) {
  const hours = (utc - now) / 3600000;
  if (hours < 0) return 'past the due date';
  if (hours < 1) return 'due within the hour';
  if (hours < 48) return 'in ' + Math.floor(hours) + ' h';
  return 'in ' + Math.floor(hours / 24) + ' days';
}

function annotate(due) {
  const rows = document.querySelectorAll(LIST + ' .list_item');
  for (const row of rows) {
    const name = row.querySelector('.item_name');
    const course = row.querySelector('.item_course');
    if (!name || !course) continue;
    const key = course.textContent.trim() + '/' + (name.firstElementChild || name).textContent.trim();
    const info = due[key];
    let line = name.querySelector('.' + MARK);
    if (!info) {
      if (line) line.remove();
      continue;
    }
    const text = 'Due ' + info.text + ' · ' + relative(info.utc, Date.now());
    if (!line) {
      line = document.createElement('div');
      line.className = MARK;
      line.style.fontSize = 'var(--jp-ui-font-size0)';
      name.appendChild(line);
    }
    if (line.textContent !== text) line.textContent = text;
    line.style.color = info.utc < Date.now() ? 'var(--jp-error-color1)' : 'var(--jp-ui-font-color2)';
  }
}

const plugin = {
  id: 'mlbd-deadlines:plugin',
  description: "Each assignment's due date in nbgrader's Assignment List.",
  autoStart: true,
  activate: () => {
    const settings = ServerConnection.makeSettings();
    let due = {};
    let loading = null;
    let seen = 0;
    const refresh = () => {
      if (loading) return;
      loading = dueDates(settings)
        .then(d => { due = d; annotate(due); })
        .catch(() => undefined)
        .finally(() => { loading = null; });
    };
    // The panel re-renders its rows on open and after every fetch/submit: annotate each time,
    // and read the list again when a new set of rows appears.
    new MutationObserver(() => {
      const rows = document.querySelectorAll(LIST + ' .list_item').length;
      if (rows !== seen) {
        seen = rows;
        refresh();
      }
      annotate(due);
    }).observe(document.body, { childList: true, subtree: true });
  }
};

export default plugin;
