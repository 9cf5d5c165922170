# One image for every process of the stack: web, worker, scheduler, migrate.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TZ=UTC FLASK_APP=wsgi
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY webapp webapp
COPY templates templates
COPY static static
COPY migrations migrations
COPY wsgi.py gunicorn.conf.py ./
RUN useradd --create-home segments && mkdir -p /data/reports && chown segments /data/reports
USER segments
EXPOSE 8000
CMD ["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]
