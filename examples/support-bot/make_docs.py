"""Regenerate the binary documents of the support-bot corpus (.pdf and .docx) from the text below.

    .venv/bin/python examples/support-bot/make_docs.py

PDFs are written by a ~40-line PDF 1.4 writer (Helvetica, one text line per ``Tj``) so no PDF library is
needed beyond pypdf for reading; .docx files use python-docx with real ``Heading`` styles.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

HERE = Path(__file__).parent / "corpus"

HUB_MANUAL = [
    ("h1", "Brightloom Hub H2 User Manual"),
    ("p", "The Hub H2 connects Zigbee, Thread and Wi-Fi devices and runs automations locally, so lights and the thermostat keep working without internet."),
    ("h2", "Specifications"),
    ("p", "Radios: Wi-Fi 2.4/5 GHz, Zigbee 3.0, Thread 1.3, Bluetooth LE 5.0. Ethernet: one 10/100 port. Power: 5 V USB-C adapter included, 3 W typical. Size: 98 x 98 x 28 mm. The Hub H2 supports up to 128 connected devices."),
    ("h2", "Setup"),
    ("p", "Plug the Hub H2 into power and, optionally, into your router with the Ethernet cable. Wait until the ring light pulses blue, then open the Brightloom app and tap Home > Add device > Hub H2. Setup takes about 3 minutes."),
    ("page", ""),
    ("h2", "Ring light colors"),
    ("p", "Pulsing blue: ready to pair. Solid green: connected and working. Blinking amber: no internet connection, local control still works. Solid red: hardware fault, contact support."),
    ("h2", "Backups"),
    ("p", "The hub backs up its automations and device list to your Brightloom account every night at 3 a.m. To restore a backup on a replacement hub, choose Restore from backup during setup."),
    ("h2", "Factory reset"),
    ("p", "Press and hold the recessed reset button on the bottom of the hub for 20 seconds, until the ring light flashes red three times. A factory reset deletes all automations and paired devices from the hub."),
]

SAFETY = [
    ("h1", "Safety and Regulatory Information"),
    ("p", "Read these instructions before installing any Brightloom device. Keep them for future reference."),
    ("h2", "Electrical safety"),
    ("p", "Turn off power at the circuit breaker before installing or removing the Thermo T3 or a wired Doorbell D1. If you are not comfortable working with electrical wiring, hire a licensed electrician. Brightloom devices are designed for indoor use unless stated otherwise; the Cam C1 and Doorbell D1 are rated for outdoor use."),
    ("h2", "Batteries"),
    ("p", "The Doorbell D1 contains a lithium-ion battery. Do not expose it to temperatures above 60 degrees C, do not puncture it, and recycle it according to local rules. Never charge a swollen battery."),
    ("page", ""),
    ("h2", "Radio frequency exposure"),
    ("p", "Devices comply with FCC Part 15 and the EU Radio Equipment Directive 2014/53/EU. Keep a distance of at least 20 cm between the Hub H2 and your body during normal operation."),
    ("h2", "Disposal"),
    ("p", "Do not dispose of Brightloom devices with household waste. Return them through the Trade-In Program or a local electronics collection point."),
]

THERMO_MANUAL = [
    ("Title", "Thermo T3 Smart Thermostat Manual"),
    ("p", "The Thermo T3 controls heating and cooling systems and learns your schedule. It works with most 24 V systems: gas, oil and electric furnaces, heat pumps with auxiliary heat, and central air conditioning."),
    ("Heading 1", "Compatibility"),
    ("p", "The Thermo T3 is not compatible with 120 V or 240 V line-voltage systems such as electric baseboard heaters. A C-wire (common wire) is recommended; without one, use the included Power Adapter Kit."),
    ("Heading 1", "Installation"),
    ("p", "Turn off power to your heating and cooling system at the breaker. Take a photo of the wiring of your old thermostat, label the wires with the stickers provided and connect them to the matching terminals of the T3 wall plate. Installation takes about 30 minutes."),
    ("Heading 1", "Modes"),
    ("Heading 2", "Schedule mode"),
    ("p", "Set up to 6 temperature changes per day in the app under Thermostat > Schedule."),
    ("Heading 2", "Eco+ mode"),
    ("p", "Eco+ lowers the setpoint by up to 4 degrees C when nobody is home, using phone location and the built-in occupancy sensor. Customers save 12% on heating energy on average."),
    ("Heading 2", "Away lock"),
    ("p", "Lock the temperature range with a 4-digit PIN so that guests or tenants can only adjust it between limits you set."),
    ("Heading 1", "Specifications"),
    ("table", [["Display", "3.5 inch color touchscreen"], ["Sensors", "temperature, humidity, occupancy, ambient light"],
               ["Temperature accuracy", "plus or minus 0.5 degrees C"], ["Warranty", "3 years"]]),
]

TRADE_IN = [
    ("Title", "Trade-In Program"),
    ("p", "Trade in an old smart home device, from any brand, and get credit toward a new Brightloom device."),
    ("Heading 1", "Credit amounts"),
    ("table", [["Device traded in", "Credit"], ["Smart thermostat (any brand)", "$40"], ["Video doorbell (any brand)", "$30"],
               ["Smart hub (any brand)", "$25"], ["Smart bulb, per bulb, up to 4", "$3"]]),
    ("Heading 1", "How it works"),
    ("p", "Start a trade-in in the app under Shop > Trade-In. We email a prepaid shipping label. Send the old device within 21 days; the credit is issued as store credit within 7 days after EcoCycle receives and checks it."),
    ("Heading 1", "Conditions"),
    ("p", "The device must power on. Devices with cracked screens are accepted at half credit. One trade-in per new device purchased. Store credit expires after 12 months."),
]


def write_pdf(path: Path, blocks: list[tuple[str, str]]) -> None:
    """A tiny PDF 1.4 writer: wrapped Helvetica lines, a blank line between paragraphs, ``page`` breaks."""
    pages, lines = [], []
    for kind, text in blocks:
        if kind == "page":
            pages.append(lines)
            lines = []
            continue
        size = {"h1": 16, "h2": 13}.get(kind, 10)
        for line in textwrap.wrap(text, 95 if size == 10 else 70):
            lines.append((size, line))
        lines.append((10, ""))
    pages.append(lines)

    objects = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for page_lines in pages:
        ops, y = ["BT"], 800
        for size, line in page_lines:
            esc = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"/F1 {size} Tf 1 0 0 1 50 {y} Tm ({esc}) Tj")
            y -= size + 6
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode("latin-1") + stream + b"\nendstream")
        content_id = len(objects)
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> /Contents {content_id} 0 R >>")
        kids.append(len(objects))
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>"
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        body = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))


def write_docx(path: Path, blocks: list) -> None:
    import docx

    d = docx.Document()
    for kind, content in blocks:
        if kind == "table":
            table = d.add_table(rows=0, cols=len(content[0]))
            for row in content:
                cells = table.add_row().cells
                for cell, value in zip(cells, row):
                    cell.text = value
        elif kind == "p":
            d.add_paragraph(content)
        else:
            d.add_paragraph(content, style=kind)
    d.save(str(path))


def main() -> None:
    write_pdf(HERE / "manuals" / "hub-h2-manual.pdf", HUB_MANUAL)
    write_pdf(HERE / "manuals" / "safety-information.pdf", SAFETY)
    write_docx(HERE / "manuals" / "thermo-t3-manual.docx", THERMO_MANUAL)
    write_docx(HERE / "policies" / "trade-in-program.docx", TRADE_IN)
    print("wrote 2 PDFs and 2 .docx files under", HERE)


if __name__ == "__main__":
    main()
