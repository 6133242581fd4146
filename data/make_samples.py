"""Write the PDF part of `data/samples/`, the project's own small document set.

The samples describe a fictional company, Aurora Kettle Co., so every question about them can
only be answered from the documents (a model cannot know the facts in advance). Facts (numbers,
names, dates, procedures) sit on specific pages and in specific sections, so a question set can
name its gold source and page. The set:

- `ak200-user-manual.pdf` (PDF, 5 pages): p1 box contents and safety; p2 first use, filling,
  boil times; p3 temperature presets, keep-warm, child lock; p4 descaling; p5 error codes
  E1-E4, specifications, support contact.
- `customer-policies-2024.pdf` (PDF, 3 pages): p1 shipping; p2 price match, discounts, gift
  cards; p3 take-back scheme, packaging, spare parts, app data retention.
- `warranty-and-returns.md` (Markdown, front matter): warranty periods, exclusions, 30-day
  returns, refunds, how to claim; a fenced block holds `#` lines that are not headings.
- `firmware-release-notes.md` (Markdown, front matter, setext headings): AK-200 Smart firmware
  versions with their dates and changes, how to update.
- `care-and-cleaning.txt` (plain text): filter and exterior cleaning, replacement part numbers
  and prices, storage, the AK-90 travel kettle.
- `support-faq.html` (HTML): FAQ answers as `<h2>` sections; its header, navigation, aside,
  footer and scripts hold decoy text ("50% off", a promo code, a prize draw) that must never be
  indexed.

The PDFs are generated (text layer in Helvetica, via `tests/pdfgen.py`); the other files are
written by hand. Run from the repository root: `python data/make_samples.py`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"

MANUAL_TITLE = "Aurora AK-200 Electric Kettle - User Manual"
MANUAL_PAGES = [
    """Aurora AK-200 Electric Kettle - User Manual
Manual revision C, March 2024. Aurora Kettle Co., Sheffield, United Kingdom.

Thank you for choosing the Aurora AK-200. This manual covers the AK-200 and the AK-200 Smart.
The two models are identical except that the AK-200 Smart can be controlled from the Aurora
Home app over Bluetooth.

What is in the box
- the AK-200 kettle (brushed stainless steel, capacity 1.7 litres)
- the power base, model AKB-2, with a 75 cm cord
- a removable limescale filter, part number AKF-12 (fitted in the spout)
- a quick start card and this manual

Important safety instructions
1. Only boil water. Never heat milk, soup or any other liquid in the kettle.
2. Never switch the kettle on when it is empty or below the MIN mark (0.5 litres).
3. Never immerse the kettle or the power base in water.
4. Use the kettle only with the AKB-2 power base supplied with it.
5. Children under 8 years must not use or clean the kettle.
6. Keep the lid closed while the water boils; steam escapes from the spout.
7. The handle stays cool, but the stainless steel body becomes hot during use.

The AK-200 switches itself off when the water has boiled. If it is switched on with too little
water, boil-dry protection cuts the power and error E1 is shown (see page 5).""",
    """Before first use
Remove all stickers and packaging. Fill the kettle to the MAX mark (1.7 litres), boil the
water and pour it away. Do this twice, so the kettle is boiled and emptied two times before
you make a drink with it. This removes any taste left from manufacturing.

Filling the kettle
Open the lid by pressing the lid release button on the top of the handle. Fill through the
lid, not through the spout. The water level window on the left side of the kettle is marked
from 0.5 litres (MIN) to 1.7 litres (MAX) in steps of 0.25 litres. Do not fill above MAX:
boiling water may spit out of the spout.

Placing the kettle on the base
The power base has a 360-degree connector, so the kettle can be set down facing any
direction. The kettle must sit flat on the base; if it does not, error E4 is shown.

Boiling times
At 100 °C, one cup of water (250 ml) boils in about 55 seconds. A full kettle
(1.7 litres) boils in about 4 minutes 10 seconds. Times are measured with tap water at 15 °C
and a 230 V supply; they are longer if the kettle has limescale inside.

Energy saving tip: boil only the water you need. Boiling one cup instead of a full kettle
uses about one sixth of the energy.""",
    """The control panel
The control panel on the handle has a power button and five temperature buttons. Press a
temperature button, then the power button, to start heating.

Temperature presets
- 70 °C: green tea
- 80 °C: white tea
- 85 °C: oolong tea
- 90 °C: French press coffee
- 100 °C: black tea, herbal tea and instant drinks
The default temperature, used when you only press the power button, is 100 °C.

Keep-warm function
To keep water warm at the selected temperature, hold that temperature button for 3 seconds
until it flashes. The kettle keeps the water warm for 30 minutes, then beeps twice and
switches off. Keep-warm is not available at 100 °C. If you lift the kettle off the
base during keep-warm, the function pauses; put the kettle back within 2 minutes to resume.

Child lock
Press the 70 and 100 buttons together for 5 seconds. The lock symbol lights up and all
buttons are ignored. Repeat to unlock.

Silent mode
Hold the power button for 5 seconds to switch the beeps off or on again.

Smart model only: the ring around the power button glows blue while the AK-200 Smart is
connected to the Aurora Home app.""",
    """Descaling
Limescale builds up inside every kettle in areas with hard water. It makes the kettle slower
and louder and can make it switch off before the water boils.

How often to descale
- Hard water (above 180 mg of calcium carbonate per litre): every 4 weeks.
- Soft water: every 12 weeks.
The amber SCALE light and error E3 come on after 300 boil cycles since the last descale.

Descaling procedure
1. Fill the kettle with 1 litre of cold water.
2. Add 2 tablespoons (about 30 g) of citric acid powder and stir.
3. Boil the solution, then leave it to stand in the kettle for 20 minutes.
4. Pour the solution away and rinse the kettle with clean water 3 times.
5. Boil a kettle of fresh water once and pour it away.
Clean the limescale filter (AKF-12) at the same time: see the care leaflet.

Do not use vinegar: it leaves a taste and damages the silicone lid seal (part AKS-03).
Do not use abrasive cleaners or metal scourers inside the kettle.

Resetting the descale reminder
After descaling, hold the 85 and 90 buttons together for 3 seconds. The SCALE light goes
out and the counter starts again from zero.""",
    """Troubleshooting and error codes
E1 - The kettle boiled dry or was switched on without water. Unplug the base, let the kettle
cool for 10 minutes, fill it above the MIN mark and try again.
E2 - Temperature sensor fault. Unplug the base for 30 seconds. If E2 comes back, contact
support: the kettle needs repair under warranty.
E3 - Descaling needed. Descale the kettle (page 4) and reset the reminder.
E4 - The kettle is not seated correctly on the power base. Lift it and set it down flat.

The kettle switches off before the water boils: this is almost always limescale on the
temperature sensor. Descale the kettle.

The kettle does not switch on: check the plug and that the child lock is off.

Technical specifications
Model: AK-200 (AK-200 Smart: same specifications, plus Bluetooth 5.0)
Power supply: 220-240 V, 50/60 Hz
Power: 2200 W
Capacity: 1.7 litres (MIN 0.5 litres)
Weight: 1.2 kg without the base
Dimensions: 22 x 16 x 25 cm (width x depth x height)
Cord length: 75 cm

Customer support
Email: support@aurorakettle.example
Phone: 0114 496 0321, Monday to Friday 08:00-18:00, Saturday 09:00-13:00 (UK time)

Please have the serial number ready: it is on the sticker underneath the power base.""",
]

POLICIES_TITLE = "Aurora Kettle Co. - Customer Policies 2024"
POLICIES_PAGES = [
    """Aurora Kettle Co. - Customer Policies 2024
Effective from 1 January 2024 until replaced.

1. Shipping
Standard delivery to UK mainland addresses is free for orders over £40; below that it
costs £3.95. Standard orders arrive in 3 to 5 working days.

Express next-working-day delivery costs £6.95. It is available for orders placed before
14:00, Monday to Thursday. Orders placed on Friday after 14:00 or at the weekend are
delivered on Tuesday.

Deliveries to the Scottish Highlands and Islands and to Northern Ireland take 2 working
days longer than the times above, at no extra charge.

International shipping is available to EU countries only, for a flat fee of £14.50 per
order, with delivery in 7 to 10 working days. Import duties and local taxes are paid by the
customer on delivery.

We ship from our warehouse in Rotherham. Every parcel is tracked; the tracking link is sent
by email on the day the parcel leaves the warehouse.""",
    """2. Price match
If you find the same Aurora product cheaper at a UK retailer within 14 days of your purchase,
we refund the difference. Send a link or a photo of the lower price to
sales@aurorakettle.example. Marketplace sellers and clearance prices are excluded.

3. Discounts
Students get 10 percent off any kettle after verifying their status through our student
discount partner. Businesses ordering 10 or more units in one order get 15 percent off; ask
sales@aurorakettle.example for a quote. Discounts cannot be combined with each other or with
price matching.

4. Gift cards
Gift cards are sold in values from £10 to £200 and are valid for 24 months from the date
of purchase. They can be used for several orders until the balance is spent. Gift cards
cannot be exchanged for cash.

5. Order changes and cancellation
You can change or cancel an order free of charge until it has been dispatched. After
dispatch, use the returns process described in the Warranty and Returns Policy.""",
    """6. Sustainability and take-back scheme
Send us any old electric kettle, of any brand, with a free prepaid label from our website.
When it arrives you receive a voucher worth £10 for your next Aurora purchase. Returned
kettles are taken apart by our recycling partner in Doncaster; about 92 percent of the
material by weight is recycled.

All Aurora packaging has been plastic-free since 1 September 2022. Boxes are made from
recycled cardboard and printed with water-based inks.

7. Spare parts
Spare parts are available for at least 10 years after a model is discontinued. The most
requested parts are the limescale filter (AKF-12), the lid seal (AKS-03) and the power base
(AKB-2).

8. App data
The Aurora Home app stores boil history and settings for 18 months, after which they are
deleted. You can delete your data at any time in the app under Settings, Privacy.

Aurora Kettle Co. Ltd, 14 Cutlers Yard, Sheffield S1 4PQ, United Kingdom.
Founded in 2011 by Maren Ostrova and Tobias Wren.""",
]


_NEW_ITEM = re.compile(r"^(?:- |\d+\. |E\d - )")


def reflow(page: str) -> str:
    """Join the hard-wrapped lines of each paragraph, so the PDF wraps them like a typesetter.

    A line continues the one before when that one is long (≥ 75 characters: it was wrapped)
    and it does not start a list item.
    """
    lines: list[str] = []
    for line in page.splitlines():
        if lines and len(lines[-1]) >= 75 and line.strip() and not _NEW_ITEM.match(line):
            lines[-1] = f"{lines[-1]} {line}"
        else:
            lines.append(line)
    return "\n".join(lines)


def main() -> None:
    sys.path.insert(0, str(REPO))  # so that `tests.pdfgen` can be imported from a script
    from tests.pdfgen import make_pdf

    SAMPLES.mkdir(parents=True, exist_ok=True)
    written = [
        make_pdf(
            SAMPLES / "ak200-user-manual.pdf",
            [reflow(page) for page in MANUAL_PAGES],
            title=MANUAL_TITLE,
        ),
        make_pdf(
            SAMPLES / "customer-policies-2024.pdf",
            [reflow(page) for page in POLICIES_PAGES],
            title=POLICIES_TITLE,
        ),
    ]
    for path in written:
        print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
