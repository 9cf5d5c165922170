// Swagger UI for /api/docs (a file, not an inline script: the pages' CSP allows scripts from 'self' only).
window.ui = SwaggerUIBundle({url: document.getElementById("swagger-ui").dataset.spec, dom_id: "#swagger-ui", deepLinking: true});
