"""Box supervision of stage 0 (data/regions.py): reading COCO instances, labelling grid cells."""

import json

import pytest

from lightcap_train.data.regions import BoxRegions, InstancesError, load_instances


def write(tmp_path, data) -> str:
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_instances_are_read_as_fractions_of_the_image_in_category_id_order(tmp_path):
    path = write(tmp_path, {
        "images": [{"id": 5, "width": 200, "height": 100}],
        "categories": [{"id": 9, "name": "dog"}, {"id": 2, "name": "cat"}],
        "annotations": [{"image_id": 5, "category_id": 9, "bbox": [20, 10, 100, 50]}]})
    categories, boxes = load_instances(path)
    assert categories == ["cat", "dog"]
    assert boxes == {5: [(1, 0.1, 0.1, 0.6, 0.6)]}


@pytest.mark.parametrize("data, message", [
    ({"images": []}, "no list 'categories'"),
    ({"images": [{"id": 1}], "categories": [], "annotations": []}, "width and height"),
    ({"images": [{"id": 1, "width": 8, "height": 8}], "categories": [{"id": 1, "name": "a"}],
      "annotations": [{"image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]}]}, "unknown image"),
    ({"images": [{"id": 1, "width": 8, "height": 8}], "categories": [{"id": 1, "name": "a"}],
      "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 1]}]}, "empty box"),
    ({"images": [{"id": 1, "width": 8, "height": 8}], "categories": [{"id": 1, "name": "a"}],
      "annotations": [{"image_id": 1, "category_id": 1}]}, "bbox"),
])
def test_malformed_instances_name_the_file_and_the_problem(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(InstancesError, match=message) as e:
        load_instances(path)
    assert path in str(e.value)


def test_cells_take_the_object_covering_most_of_them_and_small_objects_their_centre_cell():
    regions = BoxRegions(["dog", "cat", "bee"])
    big = (0, 0.25, 0.25, 0.75, 0.75)  # exactly the four middle cells of a 4x4 grid
    cat = (1, 0.5, 0.5, 1.0, 0.7)  # covers cells (2, 2) and (2, 3) by 0.8 of their height
    bee = (2, 0.01, 0.01, 0.05, 0.05)  # far smaller than a cell: its centre cell (0, 0)
    label = regions.targets([{"boxes": [big, cat, bee]}, {"boxes": []}], 4)["label"].view(2, 4, 4)
    expected = [[3, 0, 0, 0],
                [0, 1, 1, 0],
                [0, 1, 1, 2],  # (2, 2): the dog covers all of it, the cat 0.8
                [0, 0, 0, 0]]
    assert label[0].tolist() == expected
    assert label[1].sum() == 0
    assert regions.outputs == 4

