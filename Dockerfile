FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY ingress ingress
COPY tasks tasks
COPY beat beat
COPY realtime realtime
COPY loadtests loadtests
COPY celeryconfig.py ./
RUN pip install --no-cache-dir . && useradd --system deepref
USER deepref
ENV DEEPREF_ENV=production PYTHONUNBUFFERED=1
EXPOSE 8000
CMD ["gunicorn", "-c", "ingress/gunicorn.conf.py", "--bind", "0.0.0.0:8000", "ingress.app:app"]
