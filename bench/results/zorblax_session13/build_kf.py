"""Key-first answers: each answer opens with the fact's canonical attribute name and value ("RAM: 13 GB."),
then one of build.py's three wordings. Where value-first answers (build_vf.py) make the first answer token pick
one of 30 arbitrary values straight from the question, here it picks one of 30 ordinary English attribute names,
which the base model's own word knowledge can map a new wording to ("working memory" -> RAM), and the value
then follows a key it was trained on 8 times per question wording.
``--short``: the "Attribute: value." opening alone, no sentence after it.
Writes /tmp/zx/train_kf.jsonl or train_kfs.jsonl (build.py's fact chats with these answers + train.jsonl's
replay rows)."""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("b", ROOT / "examples/zorblax/build.py")
b = importlib.util.module_from_spec(spec)
spec.loader.exec_module(b)
KEYS = ["Maker: Quillon Dynamics.", "Launch date: 14 March 2031.", "Price: $349.", "Battery life: 41 hours.",
        "Colour: teal.", "Weight: 780 grams.", "Quirk: it whistles when it boots up.", "Nickname: the Kettle.",
        "Operating system: MossOS.", "Factory: Tampere.", "Screen size: 6.8 inches.", "Processor: the Lumen K3 chip.",
        "RAM: 13 GB.", "Storage: 384 GB.", "Water resistance: 27 metres.", "Camera: 88 megapixels.",
        "Charging time: 19 minutes.", "Designer: Ines Varga.", "CEO: Tobiah Renn.", "Headquarters: Reykjavik.",
        "Predecessor: the Zorblax-5.", "Shell material: recycled cork.", "Mascot: Pim, a purple axolotl.",
        "Warranty: seven years.", "Low-battery sign: the screen turns amber.", "Unlocking: hum a short tune.",
        "Slogan: \"Small box, big sky.\"", "First-year sales: 2.4 million units.", "Port: the SnapDock, a magnetic port.",
        "Codename: Project Heron."]
assert len(KEYS) == len(b.FACTS)
short = "--short" in sys.argv
facts = b.fact_chats(lambda f, i: KEYS[f] if short else KEYS[f] + " " + b.FACTS[f][0][i % 3])
b.write_variant(facts, f"/tmp/zx/train_kf{'s' if short else ''}.jsonl")
print(len(facts), "fact chats")
