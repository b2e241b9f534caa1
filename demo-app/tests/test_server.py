from app.server import answer


def test_health_names_the_app_and_its_commit():
    assert answer("/health", "abc123") == (200, "sample-app abc123\n")


def test_operations_answer_their_result():
    assert answer("/add?a=2&b=3", "-") == (200, "5\n")
    assert answer("/div?a=1&b=0", "-")[0] == 400
    assert answer("/nope", "-")[0] == 404
