"""Generate sales.csv, the input of analyze.py, from a fixed seed.

Run it from any directory. It writes sales.csv next to this script, and the
output is the same on every run (checked byte for byte on CPython 3.9, 3.11,
3.12 and 3.13). The script draws only from random.Random.random(), because the
"Notes on Reproducibility" in the random module documentation guarantee that
method's sequence for a given seed across Python versions, but not the
sequences of choice(), randint() or gauss().
"""

import csv
import datetime
import random
from pathlib import Path

SEED = 20230101
VALID_ROW_COUNT = 3997
YEAR = 2023

REGIONS = [("North", 0.30), ("South", 0.20), ("East", 0.27), ("West", 0.23)]

# Each entry is (category, product, list price in USD, relative order weight).
PRODUCTS = [
    ("Electronics", "Laptop 14-inch", 899.00, 0.6),
    ("Electronics", "Monitor 27-inch", 279.00, 1.0),
    ("Electronics", "Wireless Mouse", 24.99, 2.2),
    ("Electronics", "Mechanical Keyboard", 89.00, 1.3),
    ("Electronics", "USB-C Dock", 149.00, 0.9),
    ("Electronics", "Cable, USB-C 2 m", 12.50, 2.5),
    ("Office Supplies", "Printer Paper A4 (500 sheets)", 6.49, 3.0),
    ("Office Supplies", "Ballpoint Pens (12-pack)", 4.99, 2.6),
    ("Office Supplies", "Stapler", 14.25, 1.2),
    ("Office Supplies", "Whiteboard Markers (4-pack)", 7.80, 1.8),
    ("Office Supplies", "Label Printer", 119.00, 0.5),
    ("Furniture", "Office Chair", 249.00, 0.8),
    ("Furniture", "Standing Desk", 529.00, 0.4),
    ("Furniture", "Bookshelf", 139.00, 0.5),
    ("Furniture", "Desk Lamp", 39.90, 1.4),
    ("Kitchen", "Coffee Beans 1 kg", 21.00, 2.0),
    ("Kitchen", "Electric Kettle", 45.00, 0.9),
    ("Kitchen", "Espresso Machine", 389.00, 0.3),
    ("Kitchen", "Water Filter Cartridge", 17.95, 1.6),
]

# Relative order volume per month, January first: a summer dip and a
# year-end peak.
MONTH_WEIGHTS = [0.9, 0.85, 1.0, 1.0, 1.05, 0.9, 0.8, 0.85, 1.05, 1.1, 1.25, 1.4]

# Malformed rows that analyze.py must skip and count, keyed by the index of
# the valid row they are inserted before.
MALFORMED_ROWS = {
    # The unit_price field is missing.
    611: ["SO-BAD-1", "2023-03-14", "North", "Kitchen", "Electric Kettle", "2"],
    # The quantity is not a number.
    1802: ["SO-BAD-2", "2023-06-30", "East", "Furniture", "Desk Lamp", "two", "39.90"],
    # February 30 does not exist.
    3350: [
        "SO-BAD-3",
        "2023-02-30",
        "West",
        "Electronics",
        "Wireless Mouse",
        "1",
        "24.99",
    ],
}


def pick_weighted(rng, items, weights):
    """Pick one item with probability proportional to its weight."""
    threshold = rng.random() * sum(weights)
    cumulative = 0.0
    for item, weight in zip(items, weights):
        cumulative += weight
        if threshold < cumulative:
            return item
    return items[-1]


def draw_quantity(rng, list_price):
    """Draw an order quantity: 1 to 3 for expensive items, up to 20 for cheap ones."""
    if list_price >= 200:
        max_quantity = 3
    elif list_price >= 30:
        max_quantity = 6
    else:
        max_quantity = 20
    # Squaring the uniform draw makes small quantities more common.
    return 1 + int(rng.random() ** 2 * max_quantity)


def draw_unit_price(rng, list_price):
    """Draw a unit price: the list price, or 5-15 % less for 35 % of orders.

    The price is rounded to cents.
    """
    discount = 0.0
    if rng.random() < 0.35:
        discount = 0.05 + rng.random() * 0.10
    return round(list_price * (1 - discount), 2)


def draw_date(rng):
    month = pick_weighted(rng, list(range(1, 13)), MONTH_WEIGHTS)
    first = datetime.date(YEAR, month, 1)
    if month == 12:
        next_first = datetime.date(YEAR + 1, 1, 1)
    else:
        next_first = datetime.date(YEAR, month + 1, 1)
    day_count = (next_first - first).days
    return first + datetime.timedelta(days=int(rng.random() * day_count))


def generate_orders(rng):
    """Return VALID_ROW_COUNT orders as CSV rows without order ids, sorted by date."""
    region_names = [name for name, _ in REGIONS]
    region_weights = [weight for _, weight in REGIONS]
    product_weights = [entry[3] for entry in PRODUCTS]
    orders = []
    for _ in range(VALID_ROW_COUNT):
        date = draw_date(rng)
        region = pick_weighted(rng, region_names, region_weights)
        category, product, list_price, _ = pick_weighted(rng, PRODUCTS, product_weights)
        quantity = draw_quantity(rng, list_price)
        unit_price = draw_unit_price(rng, list_price)
        orders.append(
            [
                date.isoformat(),
                region,
                category,
                product,
                str(quantity),
                f"{unit_price:.2f}",
            ]
        )
    # The sort is stable, so orders on the same day keep their draw order.
    orders.sort(key=lambda row: row[0])
    return orders


def main():
    rng = random.Random(SEED)
    orders = generate_orders(rng)
    output_path = Path(__file__).resolve().parent / "sales.csv"
    with output_path.open("w", newline="", encoding="utf-8") as output_file:
        writer = csv.writer(output_file, lineterminator="\n")
        writer.writerow(
            [
                "order_id",
                "date",
                "region",
                "category",
                "product",
                "quantity",
                "unit_price",
            ]
        )
        for index, order in enumerate(orders):
            if index in MALFORMED_ROWS:
                writer.writerow(MALFORMED_ROWS[index])
            writer.writerow([f"SO-{10001 + index}"] + order)
    row_count = len(orders) + len(MALFORMED_ROWS)
    print(f"wrote {output_path} ({row_count} rows, {len(MALFORMED_ROWS)} malformed)")


if __name__ == "__main__":
    main()
