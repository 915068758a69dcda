// Discord-flavoured markdown to DOM nodes. User text only becomes text nodes; links are built
// as elements whose href is checked to be http(s). Nothing here ever parses HTML.

import { h } from './dom.js';

const ID = '[0-9a-f]{64}';

/// Inline rules, tried in order at each position where one could start.
const RULES = [
  { re: /^\\([^A-Za-z0-9\s])/, node: (m) => document.createTextNode(m[1]) },
  { re: /^(`+)([\s\S]*?[^`])\1(?!`)/, node: (m) => h('code', { class: 'inline' }, m[2].trim() || m[2]) },
  { re: new RegExp(`^<@!?(${ID})>`), node: (m, ctx) => mention('user', m[1], ctx) },
  { re: new RegExp(`^<@&(${ID})>`), node: (m, ctx) => mention('role', m[1], ctx) },
  { re: new RegExp(`^<#(${ID})>`), node: (m, ctx) => mention('channel', m[1], ctx) },
  {
    re: /^\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/,
    node: (m, ctx) => link(m[2], inline(m[1], { ...ctx, noLinks: true }), ctx),
  },
  { re: /^https?:\/\/[^\s<]*[^\s<.,:;"')\]!?*_~|]/, node: (m, ctx) => link(m[0], [m[0]], ctx) },
  { re: /^\*\*([\s\S]+?)\*\*(?!\*)/, node: (m, ctx) => h('strong', {}, inline(m[1], ctx)) },
  { re: /^__([\s\S]+?)__(?!_)/, node: (m, ctx) => h('u', {}, inline(m[1], ctx)) },
  { re: /^\*(?=\S)([\s\S]*?\S)\*(?!\*)/, node: (m, ctx) => h('em', {}, inline(m[1], ctx)) },
  { re: /^_(?=\S)([\s\S]*?\S)_(?![A-Za-z0-9_])/, wordStart: true, node: (m, ctx) => h('em', {}, inline(m[1], ctx)) },
  { re: /^~~([\s\S]+?)~~/, node: (m, ctx) => h('s', {}, inline(m[1], ctx)) },
  {
    re: /^\|\|([\s\S]+?)\|\|/,
    node: (m, ctx) =>
      h('span', { class: 'spoiler', title: 'Spoiler', onclick: (e) => e.currentTarget.classList.add('revealed') }, inline(m[1], ctx)),
  },
];

const STARTS = new Set(['\\', '`', '<', '[', 'h', '*', '_', '~', '|', '\n']);

function link(url, children, ctx) {
  if (ctx.noLinks) return children;
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return children;
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return children;
  return h('a', { href: parsed.href, target: '_blank', rel: 'noopener noreferrer nofollow', title: parsed.href }, children);
}

function mention(kind, id, ctx) {
  const found = ctx.resolve?.(kind, id);
  const prefix = kind === 'channel' ? '#' : '@';
  const el = h('span', { class: `mention mention-${kind}`, dataset: { id } }, prefix + (found?.name ?? `unknown-${kind}`));
  if (found?.color) el.style.color = found.color;
  if (found?.onclick) el.addEventListener('click', found.onclick);
  return el;
}

/// Inline markdown of `text` as an array of nodes.
export function inline(text, ctx = {}) {
  const out = [];
  let plain = '';
  const flush = () => {
    if (plain) out.push(document.createTextNode(plain));
    plain = '';
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '\n') {
      flush();
      out.push(h('br'));
      i += 1;
      continue;
    }
    let matched = false;
    if (STARTS.has(c)) {
      const rest = text.slice(i);
      for (const rule of RULES) {
        if (rule.wordStart && i > 0 && /[A-Za-z0-9_]/.test(text[i - 1])) continue;
        const m = rule.re.exec(rest);
        if (!m) continue;
        flush();
        out.push(rule.node(m, ctx));
        i += m[0].length;
        matched = true;
        break;
      }
    }
    if (!matched) {
      plain += c;
      i += 1;
    }
  }
  flush();
  return out.flat();
}

/// Block markdown: fenced code blocks, `>` quotes and `>>>` quote-the-rest, then inline text.
export function render(text, ctx = {}) {
  const out = [];
  const fence = /```(?:([A-Za-z0-9_+-]+)\n)?\n?([\s\S]*?)```/g;
  let last = 0;
  for (let m = fence.exec(text); m; m = fence.exec(text)) {
    out.push(...quotes(text.slice(last, m.index), ctx));
    const code = h('code', {}, m[2].replace(/\n$/, ''));
    if (m[1]) code.dataset.lang = m[1];
    out.push(h('pre', { class: 'codeblock' }, code));
    last = m.index + m[0].length;
  }
  out.push(...quotes(text.slice(last), ctx));
  return out;
}

function quotes(text, ctx) {
  if (!text) return [];
  const out = [];
  const lines = text.replace(/^\n|\n$/g, '').split('\n');
  let plain = [];
  let quoted = [];
  const flushPlain = () => {
    if (plain.length) out.push(h('span', { class: 'md-text' }, inline(plain.join('\n'), ctx)));
    plain = [];
  };
  const flushQuote = () => {
    if (quoted.length) out.push(h('blockquote', {}, inline(quoted.join('\n'), ctx)));
    quoted = [];
  };
  for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i];
    if (line.startsWith('>>> ')) {
      flushPlain();
      quoted.push(line.slice(4), ...lines.slice(i + 1));
      break;
    }
    if (line.startsWith('> ') || line === '>') {
      flushPlain();
      quoted.push(line.slice(2));
    } else {
      flushQuote();
      plain.push(line);
    }
  }
  flushPlain();
  flushQuote();
  return out;
}

/// Plain text of a message for one-line previews (replies, notifications).
export function preview(text, max = 100) {
  const flat = text.replace(/```[\s\S]*?```/g, '[code]').replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max)}…` : flat;
}
