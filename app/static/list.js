// The image list follows the image shown: runs (as the js of the list's change event, with the
// list's value) whenever Python sends new rows, and scrolls the row marked ▶ into view when it is
// not in view already. Only the list's own scroll boxes move (never the page, which would carry
// the canvas away) and the keyboard focus stays where it is. The list is a virtual table that
// puts only the rows near its scroll position in the page: the row is first brought near by its
// index in the rows, then revealed exactly once drawn. Every cell drawn gets its text as tooltip:
// a row is one line, and a long name or status ends in "…".
(value) => {
  const MARK = '\u25b6 ';
  const rows = value && Array.isArray(value.data) ? value.data : (Array.isArray(value) ? value : []);
  const idx = rows.findIndex((r) => Array.isArray(r) && String(r[1] || '').startsWith(MARK));
  const box = document.getElementById('ws-image-list');
  if (box && !box._wsTitles) {  // once per list: rows are drawn again as the list scrolls
    const titles = () => box.querySelectorAll('.virtual-row .body-cell').forEach((c) => {
      const t = c.textContent.trim();
      if (c.title !== t) c.title = t;  // an attribute: no new mutation of the kinds observed
    });
    box._wsTitles = new MutationObserver(titles);
    box._wsTitles.observe(box, {childList: true, subtree: true, characterData: true});
    titles();
  }
  if (!box || idx < 0) return;
  function marked() {
    return Array.from(box.querySelectorAll('.virtual-row, tbody:not([aria-hidden]) tr'))
      .find((r) => r.textContent.includes(MARK)) || null;
  }
  function reveal(row) {
    // every scroll box from the row up to the list's own block (inclusive): the row in the middle
    // of each one it is not wholly inside; the window is left alone
    for (let el = row.parentElement; el; el = el.parentElement) {
      if (el.scrollHeight > el.clientHeight + 1) {
        const r = row.getBoundingClientRect(), v = el.getBoundingClientRect();
        const head = el.querySelector(':scope > table.header-table');  // the virtual table's header row
        const top = v.top + (head ? head.offsetHeight : 0);
        if (r.top < top || r.bottom > v.bottom) el.scrollTop += r.top - top - (v.bottom - top - r.height) / 2;
      }
      if (el === box) break;
    }
  }
  let tries = 0;
  function step() {
    const row = marked();
    if (row) { reveal(row); return; }
    const vp = box.querySelector('.virtual-table-viewport'), body = vp && vp.querySelector('.virtual-body');
    if (vp && body && rows.length) {  // not drawn: scroll near where it is, then look again
      vp.scrollTop = Math.max(0, body.offsetHeight * (idx + 0.5) / rows.length - vp.clientHeight / 2);
    }
    if (++tries < 40) setTimeout(step, 50);
  }
  requestAnimationFrame(step);
}
