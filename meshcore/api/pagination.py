from django.conf import settings
from rest_framework.pagination import PageNumberPagination


class MeshPagination(PageNumberPagination):
    page_size = settings.MESH_API_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = 1000
