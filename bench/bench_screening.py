"""Benchmark: screening 100,000 passengers against a 1,000,000-entry watchlist replica.

Builds the replica the way a subscriber does: the owner seals a v1 snapshot and deltas (20,000
entries each) for the subscriber, and the replica verifies (certificate chain, outer and inner
signatures), decrypts and applies each version into its SQLite file. Then it times building the
in-memory screening index from the file, and screening a generated manifest that hides planted
matches (accent, transliteration and word-order variants, document numbers), and checks they are
all found. Prints a table and a JSON line.

    .venv/bin/python bench/bench_screening.py [--entries 1000000] [--passengers 100000] [--per-version 20000]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import unicodedata
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker.api.v1 import envelope_pb2, payload_pb2, watchlist_pb2
from broker.pki.dev import ensure_dev_pki
from broker.protocol.envelope import seal
from broker.protocol.keys import EncryptionKey
from clients.watchlist import ScreeningRecord, VersionOpener, WatchlistReplica
from clients.watchlist.payloads import WATCHLIST_UPDATE_CONTENT_TYPE

OWNER, READER, LIST_ID = "FR-CUSTOMS", "DE-BKA", "FR-CUSTOMS/bench"
SYLLABLES = ["mul", "ler", "schr", "ö", "der", "gar", "cía", "már", "quez", "øst", "er", "gaard", "du", "pont",
             "no", "wak", "ko", "val", "ski", "ber", "na", "dez", "ro", "ssi", "ma", "rt", "in", "lu", "ka", "sz",
             "jo", "sé", "zé", "bø", "hr", "ve", "li", "ić", "pa", "pa", "do", "pou", "los", "y\u0131l", "d\u0131z"]
GIVEN = ["Hans", "Jean", "José", "Søren", "Łukasz", "Grete", "Marie", "Ahmed", "Olga", "Pierre", "Anna", "Jürgen",
         "Zoë", "François", "Ines", "Björn", "Mateo", "Aisha", "Chen", "Élodie", "Nikos", "Sven", "Ewa", "Luís"]


def _family(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))).capitalize()


def _dob(rng: random.Random) -> tuple[int, int, int]:
    return rng.randint(1940, 2005), rng.randint(1, 12), rng.randint(1, 28)


def _ascii_variant(name: str) -> str:
    """The ICAO 9303 transliteration a passport would print: ü -> UE, ø -> OE, accents dropped."""
    table = str.maketrans({"ü": "ue", "ö": "oe", "ä": "ae", "ø": "oe", "ß": "ss", "ł": "l", "\u0131": "i"})
    text = unicodedata.normalize("NFKD", name.lower().translate(table))
    return "".join(c for c in text if not unicodedata.combining(c)).upper()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--passengers", type=int, default=100_000)
    parser.add_argument("--per-version", type=int, default=20_000)
    parser.add_argument("--planted", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(6)
    with tempfile.TemporaryDirectory() as tmp:
        pki = ensure_dev_pki(Path(tmp) / "pki", "isb.dev")
        cert_path, key_path = pki.agency(OWNER)
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        identity_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(identity_key, ec.EllipticCurvePrivateKey)
        reader_key = EncryptionKey.generate()
        bundle = envelope_pb2.KeyBundle(agency=READER, key_id=reader_key.key_id, suite=reader_key.suite,
                                        public_key=reader_key.public_key_bytes)
        owner_bundle_key = EncryptionKey.generate()
        owner_bundle = envelope_pb2.KeyBundle(agency=OWNER, key_id=owner_bundle_key.key_id,
                                              suite=owner_bundle_key.suite,
                                              public_key=owner_bundle_key.public_key_bytes)
        opener = VersionOpener(READER, {reader_key.key_id: reader_key},
                               x509.load_pem_x509_certificates(pki.ca_cert.read_bytes()), "isb.dev")

        # 1. The entries, in versions of --per-version.
        t0 = time.perf_counter()
        people = []
        for i in range(args.entries):
            family, given, dob = _family(rng), rng.choice(GIVEN), _dob(rng)
            people.append((f"e{i}", family, given, dob, f"D{i:09d}"))
        versions: list[watchlist_pb2.WatchlistVersion] = []
        for v, start in enumerate(range(0, args.entries, args.per_version), 1):
            update = payload_pb2.WatchlistUpdate(watchlist_id=LIST_ID, version=v, snapshot=(v == 1))
            for entry_id, family, given, (y, m, d), doc in people[start:start + args.per_version]:
                update.upserts.add(entry_id=entry_id, entity_type=payload_pb2.ENTITY_PERSON, family_name=family,
                                   given_names=given, date_of_birth=payload_pb2.Date(year=y, month=m, day=d),
                                   document_number=doc, action_on_hit=payload_pb2.DISCREET_CHECK_AND_REPORT)
            envelope = seal(sender=OWNER, identity_key=identity_key, certificate=certificate,
                            recipients=[READER], recipient_keys={READER: bundle, OWNER: owner_bundle},
                            kind=envelope_pb2.WATCHLIST_UPDATE, body=update.SerializeToString(),
                            content_type=WATCHLIST_UPDATE_CONTENT_TYPE,
                            handling=envelope_pb2.Handling(tlp=envelope_pb2.TLP_AMBER),
                            watchlist_id=LIST_ID, watchlist_version=v)
            versions.append(watchlist_pb2.WatchlistVersion(
                watchlist_id=LIST_ID, version=v, snapshot=update.snapshot, envelope=envelope,
                sender_certificate=certificate.public_bytes(serialization.Encoding.DER)))
        generate_s = time.perf_counter() - t0

        # 2. The replica applies every version through verification.
        replica = WatchlistReplica(Path(tmp) / "replica.db", watchlist_id=LIST_ID, owner=OWNER)
        t0 = time.perf_counter()
        for item in versions:
            replica.apply_served(item, opener)
        apply_s = time.perf_counter() - t0

        # 3. The manifest: random passengers plus planted variants of listed people.
        manifest = [ScreeningRecord(record_id=f"pax{i}", family_name=_family(rng), given_names=rng.choice(GIVEN),
                                    date_of_birth="{:04d}-{:02d}-{:02d}".format(*_dob(rng)),
                                    document_number=f"P{i:08d}")
                    for i in range(args.passengers - args.planted)]
        planted = {}
        for j, person in enumerate(rng.sample(people, args.planted)):
            entry_id, family, given, (y, m, d), doc = person
            record_id = f"plant{j}"
            if j % 3 == 0:  # transliterated and word order swapped
                record = ScreeningRecord(record_id, name=f"{_ascii_variant(family)} {_ascii_variant(given)}",
                                         date_of_birth=f"{y:04d}-{m:02d}-{d:02d}")
            elif j % 3 == 1:  # accents kept, lower case, given/family swapped into the wrong columns
                record = ScreeningRecord(record_id, family_name=given.lower(), given_names=family.lower(),
                                         date_of_birth=f"{y:04d}-{m:02d}-{d:02d}")
            else:  # another name, the listed document
                record = ScreeningRecord(record_id, name="Unrelated Person", document_number=doc.lower())
            planted[record_id] = entry_id
            manifest.insert(rng.randrange(len(manifest) + 1), record)

        t0 = time.perf_counter()
        index = replica.index()
        index_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        hits = replica.screen(manifest)
        screen_s = time.perf_counter() - t0
        found = {(h.record.record_id, h.entry_id) for h in hits}
        missed = [r for r, e in planted.items() if (r, e) not in found]
        random_hits = sum(1 for h in hits if not h.record.record_id.startswith("plant"))
        replica.close()

    result = {
        "entries": len(index), "versions": len(versions), "passengers": len(manifest), "planted": len(planted),
        "planted_missed": len(missed), "hits": len(hits), "hits_on_random_passengers": random_hits,
        "generate_and_seal_s": round(generate_s, 2), "verify_and_apply_s": round(apply_s, 2),
        "index_build_s": round(index_s, 2), "screen_s": round(screen_s, 3),
        "passengers_per_s": round(len(manifest) / screen_s),
    }
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(result))
    if missed:
        raise SystemExit(f"planted matches missed: {missed[:5]}")


if __name__ == "__main__":
    main()
