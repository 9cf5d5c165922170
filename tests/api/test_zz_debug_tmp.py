from webapp.queue import get_queue
import sqlalchemy as sa
from webapp.models import Report

def test_debug(redis_app, committed_db):
    client = redis_app.test_client()
    for q in ["date=2023-08-29%2010:32", "date=2023-08-29%2010:33", "date=2023-08-29%2010:32&user_id=7", "date=2023-08", "date=2023-07"]:
        r = client.get(f"/report?{q}")
        with redis_app.app_context():
            print(q, r.status_code, r.json, get_queue(redis_app).count, get_queue(redis_app).job_ids)
    print(committed_db.execute(sa.select(Report.id, Report.status, Report.kind)).all())
    assert 0
