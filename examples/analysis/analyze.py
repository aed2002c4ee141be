"""Summarize sales.csv as a Markdown report of revenue by region, category and month.

The script reads sales.csv from the current directory, or from its own directory
if the current directory has none, or from the path given as the only argument.
It writes report.md to the current directory and prints the same report to stdout.
Rows that fail validation are skipped, counted and listed in the report.
It uses only the standard library, so it runs on a bare Python 3.9 or newer.

The report is the same byte for byte on every run over the same input: it
contains no timestamps, every table is sorted, and money is computed as Decimal.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Callable, Iterable

CSV_NAME = "sales.csv"
REPORT_NAME = "report.md"
REQUIRED_COLUMNS = (
    "order_id",
    "date",
    "region",
    "category",
    "product",
    "quantity",
    "unit_price",
)
TOP_PRODUCT_COUNT = 5
MAX_LISTED_SKIPPED_ROWS = 20

QUANTITY_PATTERN = re.compile(r"[0-9]+")
PRICE_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)?")


class InvalidRow(ValueError):
    """A CSV row that cannot be parsed into an Order. The message names the field."""


class InputError(Exception):
    """A problem with the input file that stops the whole analysis."""


@dataclass(frozen=True)
class Order:
    order_id: str
    date: datetime.date
    region: str
    category: str
    product: str
    quantity: int
    unit_price: Decimal

    @property
    def revenue(self) -> Decimal:
        return self.quantity * self.unit_price


@dataclass(frozen=True)
class SkippedRow:
    """A malformed row: its line number in the CSV file and why it was skipped."""

    line_number: int
    reason: str


@dataclass(frozen=True)
class GroupStats:
    """Order statistics of one group, such as one region. Money values are unrounded."""

    name: str
    order_count: int
    revenue: Decimal
    mean_order_value: Decimal
    median_order_value: Decimal


def find_csv(argument: str | None) -> Path:
    """Return the path of the input CSV or raise InputError if it does not exist."""
    if argument is not None:
        path = Path(argument)
        if not path.is_file():
            raise InputError(f"{argument} not found or not a regular file")
        return path

    in_cwd = Path.cwd() / CSV_NAME
    next_to_script = Path(__file__).resolve().parent / CSV_NAME
    for candidate in (in_cwd, next_to_script):
        if candidate.is_file():
            return candidate
    raise InputError(
        f"{CSV_NAME} not found in the current directory ({in_cwd.parent}) "
        f"or next to {Path(__file__).name} ({next_to_script.parent}). "
        f"Run the script from the directory that contains {CSV_NAME}, "
        "or pass the CSV path as an argument."
    )


def parse_text(fields: dict[str, str], column: str) -> str:
    value = fields[column].strip()
    if not value:
        raise InvalidRow(f"empty {column}")
    return value


def parse_date(value: str) -> datetime.date:
    try:
        return datetime.datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        message = f"invalid date {value!r}, expected an existing date as YYYY-MM-DD"
        raise InvalidRow(message) from None


def parse_quantity(value: str) -> int:
    # The pattern check is needed because int() also accepts "+3", "1_000" and
    # non-ASCII digits.
    if not QUANTITY_PATTERN.fullmatch(value) or int(value) == 0:
        raise InvalidRow(f"invalid quantity {value!r}, expected a positive integer")
    return int(value)


def parse_unit_price(value: str) -> Decimal:
    # The pattern check is needed because Decimal() also accepts "NaN", "-1" and "1e3".
    if not PRICE_PATTERN.fullmatch(value):
        raise InvalidRow(
            f"invalid unit_price {value!r}, "
            "expected a non-negative decimal number such as 12.50"
        )
    return Decimal(value)


def parse_order(fields: dict[str, str]) -> Order:
    """Build an Order from one row keyed by column name, or raise InvalidRow."""
    return Order(
        order_id=parse_text(fields, "order_id"),
        date=parse_date(fields["date"].strip()),
        region=parse_text(fields, "region"),
        category=parse_text(fields, "category"),
        product=parse_text(fields, "product"),
        quantity=parse_quantity(fields["quantity"].strip()),
        unit_price=parse_unit_price(fields["unit_price"].strip()),
    )


def read_orders(path: Path) -> tuple[list[Order], list[SkippedRow]]:
    """Read and validate every row of the CSV file.

    Returns the valid orders in file order and the skipped rows. A row is skipped
    when its field count differs from the header's, when a field is invalid, or
    when its order_id repeats an earlier row's. Blank lines are ignored without
    being counted. Raises InputError when the file cannot be read or decoded,
    or when the header lacks a required column.
    """
    orders: list[Order] = []
    skipped: list[SkippedRow] = []
    first_line_of_order_id: dict[str, int] = {}
    try:
        # utf-8-sig also accepts the byte order mark that spreadsheet exports often
        # start with.
        with path.open(newline="", encoding="utf-8-sig") as csv_file:
            reader = csv.reader(csv_file)
            header: list[str] = []
            for row in reader:
                if row:
                    header = [name.strip() for name in row]
                    break
            if not header:
                raise InputError(
                    f"{path} is empty. "
                    f"Expected a header line: {','.join(REQUIRED_COLUMNS)}"
                )
            missing = [column for column in REQUIRED_COLUMNS if column not in header]
            if missing:
                raise InputError(
                    f"{path}: header is missing the column(s) "
                    f"{', '.join(missing)}. "
                    f"Expected a header with at least: {','.join(REQUIRED_COLUMNS)}"
                )

            for row in reader:
                if not row:
                    continue
                # line_num is the file line where this record ends, which differs
                # from the start line only for quoted fields that contain newlines.
                line_number = reader.line_num
                if len(row) != len(header):
                    reason = f"expected {len(header)} fields, found {len(row)}"
                    skipped.append(SkippedRow(line_number, reason))
                    continue
                try:
                    order = parse_order(dict(zip(header, row)))
                except InvalidRow as error:
                    skipped.append(SkippedRow(line_number, str(error)))
                    continue
                if order.order_id in first_line_of_order_id:
                    first_line = first_line_of_order_id[order.order_id]
                    reason = (
                        f"duplicate order_id {order.order_id!r}, "
                        f"first seen on line {first_line}"
                    )
                    skipped.append(SkippedRow(line_number, reason))
                    continue
                first_line_of_order_id[order.order_id] = line_number
                orders.append(order)
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not valid UTF-8: {error}") from None
    except csv.Error as error:
        message = f"{path}: CSV syntax error near line {reader.line_num}: {error}"
        raise InputError(message) from None
    except OSError as error:
        raise InputError(f"failed to read {path}: {error}") from None
    return orders, skipped


def sum_revenue(orders: Iterable[Order]) -> Decimal:
    return sum((order.revenue for order in orders), Decimal(0))


def compute_group_stats(name: str, orders: list[Order]) -> GroupStats:
    order_values = [order.revenue for order in orders]
    return GroupStats(
        name=name,
        order_count=len(orders),
        revenue=sum_revenue(orders),
        mean_order_value=statistics.mean(order_values),
        median_order_value=statistics.median(order_values),
    )


def group_orders(
    orders: Iterable[Order], key: Callable[[Order], str]
) -> dict[str, list[Order]]:
    groups: dict[str, list[Order]] = defaultdict(list)
    for order in orders:
        groups[key(order)].append(order)
    return groups


def rank_groups(orders: list[Order], key: Callable[[Order], str]) -> list[GroupStats]:
    """Compute statistics per group, sorted by revenue (highest first), then by name."""
    groups = group_orders(orders, key)
    stats = [compute_group_stats(name, members) for name, members in groups.items()]
    return sorted(stats, key=lambda group: (-group.revenue, group.name))


def format_money(value: Decimal) -> str:
    """Format an amount with thousands separators and 2 decimals, rounding half even."""
    return f"{value:,.2f}"


def format_count(value: int) -> str:
    return f"{value:,}"


def format_percent(part: Decimal, whole: Decimal) -> str:
    if whole == 0:
        return "n/a"
    return f"{part * 100 / whole:.1f}%"


def escape_cell(text: str) -> str:
    """Escape a Markdown table cell value, where a bare | would start a new cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|")


def render_table(
    headers: list[str], rows: list[list[str]], right_aligned: set[int]
) -> list[str]:
    """Render a Markdown table. Columns whose index is in right_aligned align right."""
    separators = []
    for index in range(len(headers)):
        separators.append("---:" if index in right_aligned else "---")
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(separators) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(escape_cell(cell) for cell in row) + " |")
    return lines


def render_group_section(
    title: str, column_name: str, groups: list[GroupStats], total: Decimal
) -> list[str]:
    headers = [column_name, "Orders", "Revenue", "Share", "Mean order", "Median order"]
    rows = [
        [
            group.name,
            format_count(group.order_count),
            format_money(group.revenue),
            format_percent(group.revenue, total),
            format_money(group.mean_order_value),
            format_money(group.median_order_value),
        ]
        for group in groups
    ]
    table = render_table(headers, rows, right_aligned={1, 2, 3, 4, 5})
    return [f"## {title}", ""] + table + [""]


def render_monthly_section(orders: list[Order]) -> list[str]:
    """Render order count, revenue and change from the month before, per month."""
    months = group_orders(orders, lambda order: order.date.strftime("%Y-%m"))
    rows = []
    previous_revenue: Decimal | None = None
    for month in sorted(months):
        stats = compute_group_stats(month, months[month])
        if previous_revenue is None or previous_revenue == 0:
            change = "n/a"
        else:
            change_percent = (stats.revenue - previous_revenue) * 100 / previous_revenue
            change = f"{change_percent:+.1f}%"
        rows.append(
            [
                month,
                format_count(stats.order_count),
                format_money(stats.revenue),
                change,
            ]
        )
        previous_revenue = stats.revenue
    headers = ["Month", "Orders", "Revenue", "Change"]
    table = render_table(headers, rows, right_aligned={1, 2, 3})
    # NOTE: a month with no valid orders gets no row, so "Change" then compares
    # with the last month that has orders, not with the calendar month before.
    return ["## Monthly revenue", ""] + table + [""]


def render_top_products_section(orders: list[Order]) -> list[str]:
    products = group_orders(orders, lambda order: order.product)
    ranked = sorted(products.items(), key=lambda item: (-sum_revenue(item[1]), item[0]))
    rows = []
    top_products = ranked[:TOP_PRODUCT_COUNT]
    for rank, (product, product_orders) in enumerate(top_products, start=1):
        # A product listed under several categories shows all of them, sorted.
        categories = ", ".join(sorted({order.category for order in product_orders}))
        rows.append(
            [
                str(rank),
                product,
                categories,
                format_count(sum(order.quantity for order in product_orders)),
                format_count(len(product_orders)),
                format_money(sum_revenue(product_orders)),
            ]
        )
    headers = ["Rank", "Product", "Category", "Units", "Orders", "Revenue"]
    title = f"## Top {TOP_PRODUCT_COUNT} products by revenue"
    return [title, ""] + render_table(headers, rows, right_aligned={0, 3, 4, 5}) + [""]


def render_skipped_section(skipped: list[SkippedRow]) -> list[str]:
    lines = ["## Skipped rows", ""]
    if not skipped:
        return lines + ["None: every row was valid.", ""]
    listed = skipped[:MAX_LISTED_SKIPPED_ROWS]
    rows = [[str(row.line_number), row.reason] for row in listed]
    lines += render_table(["Line", "Reason"], rows, right_aligned={0})
    unlisted_count = len(skipped) - len(listed)
    if unlisted_count > 0:
        note = f"... and {format_count(unlisted_count)} more skipped rows not listed."
        lines += ["", note]
    return lines + [""]


def render_report(
    source_name: str, orders: list[Order], skipped: list[SkippedRow]
) -> str:
    """Render the full Markdown report. orders must not be empty."""
    overall = compute_group_stats("all", orders)
    first_date = min(order.date for order in orders)
    last_date = max(order.date for order in orders)
    row_count = len(orders) + len(skipped)

    lines = [
        "# Sales report",
        "",
        f"Source: `{source_name}`. "
        f"Period: {first_date.isoformat()} to {last_date.isoformat()}.",
        "",
        "An order's value is quantity * unit_price, in the currency of the CSV. "
        "Malformed rows are skipped and listed at the end.",
        "",
        "## Summary",
        "",
    ]
    summary_rows = [
        ["Data rows", format_count(row_count)],
        ["Malformed rows skipped", format_count(len(skipped))],
        ["Valid orders", format_count(overall.order_count)],
        ["Units sold", format_count(sum(order.quantity for order in orders))],
        ["Total revenue", format_money(overall.revenue)],
        ["Mean order value", format_money(overall.mean_order_value)],
        ["Median order value", format_money(overall.median_order_value)],
    ]
    lines += render_table(["Metric", "Value"], summary_rows, right_aligned={1}) + [""]

    by_region = rank_groups(orders, lambda order: order.region)
    lines += render_group_section(
        "Revenue by region", "Region", by_region, overall.revenue
    )
    by_category = rank_groups(orders, lambda order: order.category)
    lines += render_group_section(
        "Revenue by category", "Category", by_category, overall.revenue
    )
    lines += render_monthly_section(orders)
    lines += render_top_products_section(orders)
    lines += render_skipped_section(skipped)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Summarize sales orders as a Markdown report, "
            f"written to ./{REPORT_NAME} and to stdout."
        )
    )
    parser.add_argument(
        "csv_path",
        nargs="?",
        help=(
            f"input CSV (default: {CSV_NAME} in the current directory, "
            "else next to this script)"
        ),
    )
    args = parser.parse_args()

    try:
        csv_path = find_csv(args.csv_path)
        orders, skipped = read_orders(csv_path)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not orders:
        print(
            f"error: {csv_path} contains no valid orders "
            f"({len(skipped)} malformed rows skipped)",
            file=sys.stderr,
        )
        return 1

    # The report names the input as the user gave it, so that the report does not
    # depend on the directory the script ran from.
    source_name = args.csv_path if args.csv_path is not None else CSV_NAME
    report = render_report(source_name, orders, skipped)

    report_path = Path.cwd() / REPORT_NAME
    try:
        with report_path.open("w", encoding="utf-8", newline="\n") as report_file:
            report_file.write(report)
    except OSError as error:
        print(f"error: failed to write {report_path}: {error}", file=sys.stderr)
        return 1

    sys.stdout.write(report)
    sys.stdout.flush()
    report_size = len(report.encode("utf-8"))
    print(f"wrote {REPORT_NAME} ({report_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
