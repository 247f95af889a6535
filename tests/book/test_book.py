"""The book (`make book`), built once from scratch and opened in a real browser.

Chromium (Debian's ``chromium`` package; ``CHROMIUM`` names another executable), driven by
Playwright, opens the home page, every notebook page and the API pages of a build served on
127.0.0.1, and checks that no request leaves 127.0.0.1 (any other is blocked and fails the
test), that no script logs an error, that math is typeset, that every image loaded, and that
notebook 02's widgets and animation work with neither a kernel nor a CDN, that each kernel-free
explorer (Vega-Lite) redraws when each of its controls moves, and that the exercises' solutions
stay folded until clicked. Without Chromium these
tests fail, they do not skip: CI installs it (.ci/run). Playwright's own browsers are never
downloaded or used.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

pytestmark = pytest.mark.slow  # one build of the book (~20 s), then a browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("0*.ipynb"))
HOST = "127.0.0.1"
TIMEOUT_MS = 30_000


# -- the book, its server and the browser ----------------------------------------------------
@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    """A fresh build of the book (scripts/build_book.py, as `make book` runs it)."""
    out = tmp_path_factory.mktemp("book") / "html"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_book.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, f"the book did not build:\n{result.stdout}\n{result.stderr}"
    return out


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the tests report what matters
        pass


@pytest.fixture(scope="module")
def site(book) -> Iterator[str]:
    """The book served on 127.0.0.1 from a thread; its base URL."""
    server = ThreadingHTTPServer((HOST, 0), functools.partial(_QuietHandler, directory=book))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{HOST}:{server.server_port}/"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install Debian's chromium package "
            "(apt-get install chromium) or set CHROMIUM to a Chromium executable"
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@dataclass
class Visit:
    """One page opened in a fresh browser context, and what it did."""

    page: Page
    requests: list[str] = field(default_factory=list)  # every URL it asked for
    blocked: list[str] = field(default_factory=list)  # those that would have left 127.0.0.1
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname == HOST


@contextmanager
def visit(browser: Browser, site: str, path: str) -> Iterator[Visit]:
    """Open ``site + path``; block every request to another host; wait for MathJax."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    seen = Visit(page)

    def route(route):
        url = route.request.url
        if _is_local(url):
            route.continue_()
        else:
            seen.blocked.append(url)
            route.abort()

    context.route("**/*", route)
    page.on("request", lambda request: seen.requests.append(request.url))
    page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: seen.errors.append(f"uncaught: {error}"))
    try:
        response = page.goto(site + path, wait_until="load")
        assert response is not None and response.ok, f"{path}: {response and response.status}"
        page.evaluate(
            "() => window.MathJax && MathJax.startup && MathJax.startup.promise"
            " ? MathJax.startup.promise.then(() => true) : true"
        )
        yield seen
    finally:
        context.close()


def check_offline_and_clean(seen: Visit, path: str) -> None:
    leaving = seen.blocked + [url for url in seen.requests if not _is_local(url)]
    assert not leaving, f"{path} asked for resources outside {HOST}: {sorted(set(leaving))}"
    assert not seen.errors, f"{path} logged errors: {seen.errors}"


def broken_images(page: Page) -> list[str]:
    """The images of the page that did not load (every image is scrolled to first, so that
    none waits for the reader)."""
    return page.evaluate(
        """async () => {
            const images = [...document.images];
            for (const img of images) img.loading = "eager";
            await Promise.all(images.map((img) => img.decode().catch(() => null)));
            return images
                .filter((img) => !(img.complete && img.naturalWidth > 0))
                .map((img) => img.currentSrc.slice(0, 120) || img.outerHTML.slice(0, 120));
        }"""
    )


# TeX that MathJax did not typeset: \( \) \[ \] or $...$ left in the text of the page, outside
# code, outputs and what MathJax drew.
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$[^$\s][^$]*\$")
MATH_STATE = """() => {
    const article = document.querySelector("article").cloneNode(true);
    const math = [...document.querySelectorAll("article .math")];
    for (const el of article.querySelectorAll(
        "pre, code, script, style, mjx-container, .cell_output, .output")) el.remove();
    return {
        math: math.length,
        typeset: math.filter((el) => el.querySelector("mjx-container")).length,
        containers: document.querySelectorAll("mjx-container").length,
        text: article.textContent,
    };
}"""


def check_math(page: Page, path: str) -> int:
    """Every math element of the page typeset by MathJax, no raw TeX left; their number."""
    state = page.evaluate(MATH_STATE)
    assert state["typeset"] == state["math"], (
        f"{path}: {state['math'] - state['typeset']} of {state['math']} math elements untypeset"
    )
    raw = RAW_TEX.findall(state["text"])
    assert not raw, f"{path}: raw TeX left in the page: {raw[:5]}"
    return state["containers"]


# -- every page ------------------------------------------------------------------------------
def test_home_page_loads_offline_and_links_every_notebook(browser, site):
    with visit(browser, site, "index.html") as seen:
        check_offline_and_clean(seen, "index.html")
        assert not broken_images(seen.page)
        seen.page.goto(site + "notebooks.html", wait_until="load")
        links = seen.page.eval_on_selector_all("article a[href]", "a => a.map(x => x.href)")
        for name in NOTEBOOKS:
            assert any(f"notebooks/{name}.html" in link for link in links), name
        assert not broken_images(seen.page), "the README's figures on the notebooks page"
        check_offline_and_clean(seen, "notebooks.html")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_page_loads_offline_with_its_figures_and_math(browser, site, name):
    path = f"notebooks/{name}.html"
    with visit(browser, site, path) as seen:
        page = seen.page
        assert page.locator("article .cell_output").count() > 0, "no outputs: executed?"
        assert page.locator("article img").count() > 0, "no figures"
        assert not broken_images(page)
        check_math(page, path)
        check_offline_and_clean(seen, path)


def test_equations_are_typeset_by_mathjax(browser, site):
    path = "notebooks/01_update_rules.html"
    with visit(browser, site, path) as seen:
        assert check_math(seen.page, path) >= 5
        fonts = seen.page.evaluate(
            "async () => { await document.fonts.ready;"
            " return [...document.fonts].filter(f => f.status === 'loaded').map(f => f.family); }"
        )
        assert any(f.startswith("MJX") for f in fonts), f"MathJax's fonts did not load: {fonts}"
        check_offline_and_clean(seen, path)


# -- notebook 02: the saved widgets and the animation, without a kernel or a CDN ---------------
UNDRAWN_ICONS = """() => [...document.querySelectorAll(".animation .anim-buttons button")]
    .filter((button) => {
        const svg = button.querySelector("svg");
        if (svg) return !(svg.querySelector("path[d]") && svg.getBoundingClientRect().width > 0);
        const i = button.querySelector("i");
        if (!i || i.getBoundingClientRect().width === 0) return true;
        const before = getComputedStyle(i, "::before");
        const family = before.fontFamily.split(",")[0].replace(/["']/g, "").trim();
        const loaded = [...document.fonts].some(
            (face) => face.family.replace(/["']/g, "") === family && face.status === "loaded");
        return ["none", "normal", '""'].includes(before.content)
            || !/font ?awesome/i.test(family) || !loaded;
    })
    .map((button) => button.title)"""


def test_the_explorer_widgets_render_from_their_saved_state(browser, site):
    path = "notebooks/02_toy_trajectories.html"
    with visit(browser, site, path) as seen:
        page = seen.page
        explorer = page.locator(".jupyter-widgets.widget-vbox").first
        explorer.wait_for(state="visible")
        assert explorer.locator("select").first.input_value() == "Rosenbrock"
        labels = explorer.locator(".widget-label").all_inner_texts()
        assert {"problem", "optimizer", "lr"} <= {label.strip() for label in labels}, labels
        figure = explorer.locator("img").first
        figure.wait_for(state="visible")
        assert figure.evaluate("img => img.complete && img.naturalWidth > 0")
        assert "Error displaying widget" not in page.locator("article").inner_text()
        check_offline_and_clean(seen, path)


def test_the_animation_plays_with_icons_on_its_buttons(browser, site):
    path = "notebooks/02_toy_trajectories.html"
    with visit(browser, site, path) as seen:
        page = seen.page
        animation = page.locator(".animation").first
        animation.scroll_into_view_if_needed()
        buttons = animation.locator(".anim-buttons button")
        assert buttons.count() >= 8
        # Each icon drawn: a Font Awesome glyph in a loaded Font Awesome font (matplotlib asks
        # for Font Awesome 4, the theme's Font Awesome styles ".fa" too: either is served here),
        # or an SVG put in the <i>'s place.
        try:
            page.wait_for_function(f"() => ({UNDRAWN_ICONS})().length === 0", timeout=10_000)
        except PlaywrightTimeoutError:
            pass
        missing = page.evaluate(UNDRAWN_ICONS)
        assert not missing, f"buttons without an icon: {missing}"
        frame = animation.locator("img").first
        assert frame.evaluate("img => img.complete && img.naturalWidth > 0")
        first = frame.get_attribute("src")
        animation.locator("button[title='Next frame']").click()
        page.wait_for_function(
            "([img, src]) => img.src !== src", arg=[frame.element_handle(), first]
        )
        check_offline_and_clean(seen, path)


# -- the API reference -----------------------------------------------------------------------
def test_the_api_page_shows_signatures_and_errors(browser, site):
    path = "api/generated/analysis_lib.optim.html"
    with visit(browser, site, path) as seen:
        page = seen.page
        entry = page.locator("dl.py.class:has(> dt[id='analysis_lib.optim.AdamNX'])")
        signature = entry.locator("> dt").inner_text()
        for part in ("AdamNX", "params", "lr", "betas", "weight_decay", "fused"):
            assert part in signature, signature
        fields = entry.locator("> dd > dl.field-list > dt").all_inner_texts()
        assert any(f.strip().rstrip(":") == "Raises" for f in fields), fields
        make = page.locator("dt[id='analysis_lib.optim.make_optimizer']")
        assert "name" in make.inner_text()
        make_fields = page.locator(
            "dl.py.function:has(> dt[id='analysis_lib.optim.make_optimizer']) dl.field-list > dt"
        ).all_inner_texts()
        assert any("Raises" in f for f in make_fields), make_fields
        check_math(page, path)
        check_offline_and_clean(seen, path)


def _public_api():
    spec = importlib.util.spec_from_file_location("public_api", ROOT / "docs/_ext/public_api.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class _Anchors(HTMLParser):
    """The ids and the local link targets of one HTML page."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def _parse(page: Path) -> _Anchors:
    parser = _Anchors()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_every_public_name_is_documented(book):
    pages = {p: _parse(p) for p in (book / "api" / "generated").glob("*.html")}
    ids = set().union(*(anchors.ids for anchors in pages.values()))
    names = _public_api().public_names("analysis_lib")
    assert len(names) > 200
    missing = sorted({home for home in names.values() if home not in ids})
    assert not missing, f"public names without an entry in the API reference: {missing}"


def test_every_internal_link_resolves(book):
    broken = []
    pages = sorted(book.rglob("*.html"))
    anchors = {page: _parse(page) for page in pages}
    for page, parsed in anchors.items():
        for href in parsed.links:
            parts = urlsplit(href)
            if parts.scheme or parts.netloc or href.startswith("mailto:"):
                continue  # a link to another site: prose, not an asset
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{page.relative_to(book)} -> {href}")
            elif parts.fragment and target.suffix == ".html":
                known = anchors[target].ids if target in anchors else _parse(target).ids
                if parts.fragment not in known:
                    broken.append(f"{page.relative_to(book)} -> {href}")
    assert not broken, broken[:20]


# -- the kernel-free explorers (Vega-Lite, drawn by the book's own Vega) and the exercises ------
EXPLORER_PAGES = ["notebooks/02_toy_trajectories.html"]
#: The drawn data of an explorer: the path of every line mark and the text under the panels.
DRAWN = """(target) => [...target.querySelectorAll("svg g.mark-line path, svg g.mark-text text")]
    .map((el) => el.getAttribute("d") || el.textContent).join("|")"""


def _move(control, page: Page) -> None:
    """Move a Vega binding: another option of a menu, the other end of a slider."""
    tag = control.evaluate("el => el.tagName.toLowerCase()")
    if tag == "select":
        options = control.locator("option").all_inner_texts()
        current = control.input_value()
        control.select_option(next(o for o in options if o != current))
    else:
        control.evaluate(
            """(el) => {
                el.value = el.value === el.min ? el.max : el.min;
                el.dispatchEvent(new Event("input", { bubbles: true }));
            }"""
        )


@pytest.mark.parametrize("path", EXPLORER_PAGES)
def test_each_kernel_free_explorer_redraws_when_a_control_moves(browser, site, path):
    with visit(browser, site, path) as seen:
        page = seen.page
        explorers = page.locator("article div.vega-output")
        assert explorers.count() >= 2, "notebook 02 has two kernel-free explorers"
        for i in range(explorers.count()):
            explorer = explorers.nth(i)
            explorer.scroll_into_view_if_needed()
            page.wait_for_function(
                "(el) => el.dataset.drawn === 'true'", arg=explorer.element_handle()
            )
            controls = explorer.locator(".vega-bindings select, .vega-bindings input[type=range]")
            assert controls.count() >= 2, f"explorer {i}: {controls.count()} controls"
            for j in range(controls.count()):
                before = explorer.evaluate(DRAWN)
                assert "M" in before, f"explorer {i} drew no path"
                _move(controls.nth(j), page)
                page.wait_for_function(
                    f"([el, before]) => ({DRAWN})(el) !== before",
                    arg=[explorer.element_handle(), before],
                )
        check_offline_and_clean(seen, path)


def _solutions(page: Page):
    """The folded cells of the page's exercises (MyST-NB's hide-cell toggles after the
    "Exercises" heading)."""
    return page.locator("section#exercises details.hide")


@pytest.mark.parametrize(
    "name",
    [
        "01_update_rules",
        "02_toy_trajectories",
        "03_adamw_to_sgd_transition",
        "07_edge_of_stability",
    ],
)
def test_exercise_solutions_stay_folded_until_clicked(browser, site, name):
    path = f"notebooks/{name}.html"
    with visit(browser, site, path) as seen:
        page = seen.page
        solutions = _solutions(page)
        assert solutions.count() >= 2, f"{path}: {solutions.count()} folded solutions"
        for i in range(solutions.count()):
            solution = solutions.nth(i)
            code = solution.locator("div.cell_input, div.cell_output").first
            assert not solution.evaluate("el => el.open"), f"solution {i} is open"
            assert not code.is_visible(), f"solution {i} is visible before a click"
            solution.locator("summary").click()
            code.wait_for(state="visible")
        check_offline_and_clean(seen, path)
