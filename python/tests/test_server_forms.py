"""The service's multipart/form-data parser against forms made by a peer, urllib3's
encode_multipart_formdata (the encoder of requests and pip): the image sent as a form field gets
the caption of the same bytes sent raw, with other fields, a non-ASCII file name and a
boundary of urllib3's making; several images to POST /v1/captions come back in order; a form
cut short and a header name with a byte over 0x7F are 400s that name the problem, and the
service still answers after them."""

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

urllib3 = pytest.importorskip("urllib3")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [ROOT / "examples" / f"scene{i}.png" for i in (1, 2, 3)]


def post(url: str, body: bytes, content_type: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def raw_caption(server: str, image: Path) -> str:
    status, answer = post(server + "v1/caption?beam=1", image.read_bytes(), "image/png")
    assert status == 200, answer
    return answer["caption"]


def test_peer_made_forms_get_the_captions_of_the_raw_bytes(lightcap_server):
    expected = [raw_caption(lightcap_server, image) for image in EXAMPLES]
    for i, image in enumerate(EXAMPLES):
        body, content_type = urllib3.encode_multipart_formdata([
            ("note", "a field before the image"),
            ("image", (f"szene-{i}-größe.png", image.read_bytes(), "image/png")),
            ("after", ("notes.txt", b"\r\n--not the boundary\r\n", "text/plain")),
        ])
        status, answer = post(lightcap_server + "v1/caption?beam=1", body, content_type)
        assert status == 200, answer
        assert answer["caption"] == expected[i]

    body, content_type = urllib3.encode_multipart_formdata(
        [("image", (image.name, image.read_bytes(), "image/png")) for image in reversed(EXAMPLES)])
    status, answer = post(lightcap_server + "v1/captions?beam=1", body, content_type)
    assert status == 200, answer
    assert [c["caption"] for c in answer["captions"]] == expected[::-1]


@pytest.mark.parametrize("cut", ["short", "header"])
def test_malformed_peer_forms_are_400s_naming_the_problem(lightcap_server, cut):
    image = EXAMPLES[0].read_bytes()
    body, content_type = urllib3.encode_multipart_formdata([("image", ("a.png", image, "image/png"))])
    if cut == "short":
        body, expected = body[: len(body) // 2], "part 1 is not closed by the boundary"
    else:
        body, expected = body.replace(b"Content-Disposition", b"C\xdantent-Disposition", 1), "part 1 has a header line"
    status, answer = post(lightcap_server + "v1/caption", body, content_type)
    assert status == 400
    assert answer["error"].startswith("malformed multipart/form-data body: ") and expected in answer["error"]
    assert raw_caption(lightcap_server, EXAMPLES[0])  # still serving
