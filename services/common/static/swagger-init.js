// Starts Swagger UI on /docs. A file of this origin, not an inline script, so the
// Content-Security-Policy needs no 'unsafe-inline'. The OpenAPI URL comes from the tag.
"use strict";
(() => {
  const openapiUrl = document.currentScript.dataset.openapiUrl;
  window.addEventListener("load", () => {
    window.ui = SwaggerUIBundle({
      url: openapiUrl,
      dom_id: "#swagger-ui",
      layout: "BaseLayout",
      deepLinking: true,
      showExtensions: true,
      showCommonExtensions: true,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    });
  });
})();
